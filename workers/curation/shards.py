"""Shards: a list of documents as bytes, in JSONL (plain, .gz, .zst) or Parquet.

Bytes in, bytes out: the caller moves shards to and from S3 (or a disk); nothing here opens a
path. The format comes from the name's suffix.

JSONL: one object per line, `{"id": ..., "text": ..., **metadata}`. Blank lines are skipped but
still counted, so line numbers match an editor's. Parquet: columns `id`, `text` and `metadata`
(a JSON object as a string); on reading, any other column goes into metadata too.
"""

from __future__ import annotations

import gzip
import io
import json

from workers.curation.documents import Document

FORMATS = (".jsonl", ".jsonl.gz", ".jsonl.zst", ".parquet")


class ShardError(ValueError):
    """A shard cannot be read or written. str() starts with `name:line:` when one line (or
    Parquet row, 1-based) is at fault, with `name:` when the whole shard is."""


def shard_format(name: str) -> str:
    """The suffix of FORMATS that `name` ends with."""
    for suffix in sorted(FORMATS, key=len, reverse=True):
        if name.endswith(suffix):
            return suffix
    raise ShardError(f"{name}: unknown shard format; the name must end with one of "
                     f"{', '.join(FORMATS)}")


def read_shard(data: bytes, name: str, text_field: str = "text",
               id_field: str = "id") -> list[Document]:
    """The documents of one shard, in order. A document without `id_field` gets the id
    `f"{name}#{line_no}"`; every field but id and text goes into metadata."""
    fmt = shard_format(name)
    if fmt == ".parquet":
        return _read_parquet(data, name, text_field, id_field)
    return _read_jsonl(_decompress(data, name, fmt), name, text_field, id_field)


def write_shard(docs: list[Document], name: str) -> bytes:
    """The shard's bytes in the format named by `name`'s suffix (gzip without a timestamp, so
    the same documents give the same bytes)."""
    fmt = shard_format(name)
    for doc in docs:
        clash = {"id", "text"} & doc.metadata.keys()
        if clash:
            raise ShardError(f"{name}: document {doc.id!r} has metadata key "
                             f"{sorted(clash)[0]!r}, which would overwrite its own field")
    if fmt == ".parquet":
        return _write_parquet(docs)
    lines = "".join(json.dumps({"id": d.id, "text": d.text, **d.metadata}, ensure_ascii=False)
                    + "\n" for d in docs).encode()
    if fmt == ".jsonl.gz":
        return gzip.compress(lines, mtime=0)
    if fmt == ".jsonl.zst":
        import zstandard

        return zstandard.ZstdCompressor(level=3).compress(lines)
    return lines


def _decompress(data: bytes, name: str, fmt: str) -> bytes:
    if fmt == ".jsonl.gz":
        try:
            return gzip.decompress(data)
        except (OSError, EOFError) as exc:  # gzip.BadGzipFile is an OSError
            raise ShardError(f"{name}: cannot decompress: {exc}") from None
    if fmt == ".jsonl.zst":
        import zstandard

        # Frame by frame: a reader stops quietly at a cut-off frame, this notices it.
        out, rest, dctx = [], data, zstandard.ZstdDecompressor()
        try:
            while rest:
                frame = dctx.decompressobj()
                out.append(frame.decompress(rest))
                if not frame.eof:
                    raise ShardError(f"{name}: cannot decompress: the data ends inside a frame")
                rest = frame.unused_data
        except zstandard.ZstdError as exc:
            raise ShardError(f"{name}: cannot decompress: {exc}") from None
        return b"".join(out)
    return data


def _make_document(row: dict, name: str, line_no: int, text_field: str,
                   id_field: str) -> Document:
    text = row.get(text_field)
    if not isinstance(text, str):
        problem = "is missing" if text is None else f"is a {type(text).__name__}, not a string"
        raise ShardError(f"{name}:{line_no}: field {text_field!r} {problem}")
    doc_id = row.get(id_field)
    meta = {k: v for k, v in row.items() if k not in (text_field, id_field)}
    return Document(id=f"{name}#{line_no}" if doc_id is None else str(doc_id), text=text,
                    metadata=meta)


def _read_jsonl(data: bytes, name: str, text_field: str, id_field: str) -> list[Document]:
    docs = []
    for line_no, raw in enumerate(data.split(b"\n"), start=1):
        if not raw.strip():
            continue
        try:
            row = json.loads(raw)
        except UnicodeDecodeError as exc:
            raise ShardError(f"{name}:{line_no}: not UTF-8 (byte {exc.start})") from None
        except json.JSONDecodeError as exc:
            raise ShardError(f"{name}:{line_no}: not JSON ({exc.msg}, column {exc.colno})"
                             ) from None
        if not isinstance(row, dict):
            raise ShardError(f"{name}:{line_no}: a {type(row).__name__}, not a JSON object")
        docs.append(_make_document(row, name, line_no, text_field, id_field))
    return docs


def _read_parquet(data: bytes, name: str, text_field: str, id_field: str) -> list[Document]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(pa.BufferReader(data))
    except (pa.ArrowException, OSError) as exc:
        raise ShardError(f"{name}: not a readable Parquet file: {exc}") from None
    if text_field not in table.column_names:
        raise ShardError(f"{name}: no column {text_field!r} (columns: "
                         f"{', '.join(table.column_names)})")
    docs = []
    for row_no, row in enumerate(table.to_pylist(), start=1):
        stored = row.pop("metadata", None)
        if stored is not None:
            try:
                extra = json.loads(stored) if isinstance(stored, str) else stored
            except json.JSONDecodeError:
                raise ShardError(f"{name}:{row_no}: column 'metadata' is not JSON") from None
            if not isinstance(extra, dict):
                raise ShardError(f"{name}:{row_no}: column 'metadata' is not a JSON object")
            row = {**extra, **row}
        docs.append(_make_document(row, name, row_no, text_field, id_field))
    return docs


def _write_parquet(docs: list[Document]) -> bytes:
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.table({
        "id": pa.array([d.id for d in docs], pa.string()),
        "text": pa.array([d.text for d in docs], pa.string()),
        "metadata": pa.array([json.dumps(d.metadata, ensure_ascii=False) for d in docs],
                             pa.string()),
    })
    buf = io.BytesIO()
    pq.write_table(table, buf, compression="zstd")
    return buf.getvalue()
