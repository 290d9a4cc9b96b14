"""The methods a gateway can run as batches. A domain's servicer module registers its own
(`register`), the way it registers result converters, so gateways never import each other and
the batch code stays domain-free.

A line's body is parsed into the method's request message (proto-JSON), then `prepare` turns it
into the worker's request dict exactly as the unary call would (same validation, same errors),
and the worker runs it with the method's batch function (`task`), the one coalesced sync calls
already use."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from google.protobuf.message import Message

# prepare(gateway, request message, tenant) -> the worker's request dict; raises JobmeshError.
Prepare = Callable[[object, Message, str], Awaitable[dict]]


@dataclass(frozen=True)
class BatchMethod:
    service: str  # `ocr`
    method: str  # `Recognize`
    request_type: type[Message]
    task: str  # the worker's batch function, e.g. `jobmesh.ocr.v1.recognize_batch`
    prepare: Prepare

    @property
    def job_method(self) -> str:
        """What Job.method says for a batch of this method, e.g. `jobmesh.ocr.v1.Recognize`."""
        return f"jobmesh.{self.service}.v1.{self.method}"


_METHODS: dict[tuple[str, str], BatchMethod] = {}

# Every batchable method of the mesh, for error messages on a gateway that does not serve it.
KNOWN = {"ocr": ("Recognize",), "textgen": ("Generate",), "audio": ("Tag", "DetectSpeech",
                                                                          "Transcribe",
                                                                          "Synthesize")}


def register(method: BatchMethod) -> None:
    _METHODS[(method.service, method.method)] = method


def lookup(service: str, method: str) -> BatchMethod | None:
    return _METHODS.get((service, method))


def served() -> list[tuple[str, str]]:
    return sorted(_METHODS)
