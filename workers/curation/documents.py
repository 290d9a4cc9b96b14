"""The unit of curation: one text document with its id and free-form metadata.

Readers make them (`shards.read_shard`), filters and dedup decide over them, writers store them.
Metadata is whatever the source carried besides id and text (url, source, timestamps ...); it
must stay JSON-serialisable, because shards store it as JSON.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class Document:
    id: str
    text: str
    metadata: dict = field(default_factory=dict)
