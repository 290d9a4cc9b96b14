"""Batch jobs (CreateBatch): a JSONL manifest fanned out in chunks to a service's workers.

- `manifest`: parsing and per-line validation (pure).
- `methods`: which (service, method) pairs a gateway can batch and how a line becomes a task.
- `files`: where a batch's chunk inputs, chunk outputs and result files live in S3.
- `runner`: the worker side (run one chunk, record it, finalize the batch).
- `service`: the gateway side (BatchService).
"""
