"""The text generation mesh for the benchmark: rclone S3 + the registered SmolLM2 export + one
textgen worker + one textgen gateway on a Redis DB of its own, and streaming through it.

Streaming time-to-first-token through gRPC is what a client sees: from sending GenerateStream
to the first TokenDelta, through the gateway, the Celery task, the worker's decoding and the
job's Redis event stream back. The benchmark compares it with the same prompt's first-token time
decoded in-process, so the difference is the mesh's cost."""

from __future__ import annotations

import shutil
import statistics
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from bench.ocr_mesh import API_KEY, bench_env, claim_db, release


@dataclass
class TextgenMesh:
    redis_url: str
    root: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="jobmesh-bench-")))
    address: str = ""
    env: dict = field(default_factory=dict)
    stack: object = None

    def start(self) -> TextgenMesh:
        from shared.config import Settings
        from shared.local.stack import LocalStack, free_port
        from shared.models.registry import ModelRegistry
        from shared.storage.artifacts import ArtifactStore
        from workers.textgen.export import register_textgen_model

        claim_db(self.redis_url)
        s3_port, gw_port = free_port(), free_port()
        self.env = bench_env(self.redis_url, s3_port)
        self.stack = stack = LocalStack(self.root, self.env)
        stack.start_s3(s3_port)
        settings = Settings(**{k.removeprefix("JOBMESH_").lower(): v
                               for k, v in self.env.items()})
        store = ArtifactStore.from_settings(settings)
        store.ensure_bucket(settings.models_bucket)
        store.ensure_bucket(settings.artifacts_bucket)
        register_textgen_model(ModelRegistry(store, settings.models_bucket))
        # No worker /metrics port: the benchmark must not hold a port `make up` wants.
        stack.start_worker("textgen", extra_env={"JOBMESH_METRICS_PORT": "0"})
        stack.start_gateway("textgen", gw_port)
        stack.wait_consumers("textgen.cpu", timeout=180)
        self.address = f"127.0.0.1:{gw_port}"
        return self

    def client(self):
        from shared.client.sdk import Client
        from shared.client.settings import ClientSettings

        return Client(ClientSettings(endpoint=self.address, api_key=API_KEY), timeout_s=300)

    def stop(self) -> None:
        release(self.stack, self.redis_url)
        shutil.rmtree(self.root, ignore_errors=True)


def stream_once(client, prompt, max_new: int, speculation: str) -> dict:
    """One GenerateStream: seconds to the first delta carrying tokens, to the final message,
    and the tokens it returned."""
    kw = {"messages": prompt} if isinstance(prompt, list) else {"prompt": prompt}
    t0 = time.perf_counter()
    first = None
    final = None
    for msg in client.textgen_stream(max_new_tokens=max_new, speculation=speculation, **kw):
        if msg.HasField("delta") and msg.delta.token_ids and first is None:
            first = time.perf_counter() - t0
        if msg.HasField("final"):
            final = msg.final
    seconds = time.perf_counter() - t0
    ids = list(final.token_ids) if final is not None else []
    return {"ttft": first, "seconds": seconds, "tokens": len(ids), "ids": ids}


def stream_summary(rows: list[dict], inproc: list[dict]) -> dict:
    """Medians through gRPC next to the same prompts' in-process figures."""
    ttft = [r["ttft"] for r in rows if r["ttft"] is not None]
    ref = [r["ttft"] for r in inproc if r["ttft"] is not None]
    tokens = sum(r["tokens"] for r in rows)
    seconds = sum(r["seconds"] for r in rows)
    out = {"prompts": len(rows),
           "ttft_median_s": round(statistics.median(ttft), 3) if ttft else None,
           "ttft_max_s": round(max(ttft), 3) if ttft else None,
           "inproc_ttft_median_s": round(statistics.median(ref), 3) if ref else None,
           "tokens_per_s": round(tokens / seconds, 2) if seconds else 0.0,
           "same_as_inproc": sum(r["ids"] == i["ids"] for r, i in zip(rows, inproc,
                                                                       strict=True))}
    if out["ttft_median_s"] is not None and out["inproc_ttft_median_s"] is not None:
        out["mesh_overhead_ms"] = round(
            (out["ttft_median_s"] - out["inproc_ttft_median_s"]) * 1000, 1)
    return out
