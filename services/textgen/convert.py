"""TextGenerationService messages ⇄ the JSON the textgen worker takes and returns; the only
textgen code that touches `*_pb2`. Validation errors name proto fields."""

from __future__ import annotations

import math

from jobmesh.textgen.v1 import textgen_service_pb2 as pb

from shared.errors import InvalidArgument

GENERATE_TASK = "jobmesh.textgen.v1.generate"
GENERATE_BATCH_TASK = "jobmesh.textgen.v1.generate_batch"  # coalesced sync requests
SUBMIT_TASK = "jobmesh.textgen.v1.generate_many"

MAX_NEW_TOKENS = 2048
MAX_PROMPT_CHARS = 64_000  # far above the context window; the worker checks tokens exactly
MAX_STOPS, MAX_STOP_CHARS = 8, 64
MAX_ITEMS = 1000
ROLES = ("system", "user", "assistant")
_SPECULATION = {pb.SPECULATION_UNSPECIFIED: "auto", pb.SPECULATION_AUTO: "auto",
                pb.SPECULATION_OFF: "off", pb.SPECULATION_TOKEN_RECYCLING: "token_recycling",
                pb.SPECULATION_PROMPT_LOOKUP: "prompt_lookup"}
_FINISH = {"stop": pb.FINISH_REASON_STOP, "length": pb.FINISH_REASON_LENGTH,
           "eos": pb.FINISH_REASON_EOS, "cancelled": pb.FINISH_REASON_CANCELLED}


def params_to_dict(p: pb.GenerationParameters, field: str = "parameters") -> dict:
    if p.max_new_tokens < 0 or p.max_new_tokens > MAX_NEW_TOKENS:
        raise InvalidArgument.for_field(f"{field}.max_new_tokens",
                                        f"must be within 1..{MAX_NEW_TOKENS} (0 = default 128)")
    if not math.isfinite(p.temperature) or p.temperature < 0 or p.temperature > 10:
        raise InvalidArgument.for_field(f"{field}.temperature", "must be within 0..10")
    if not math.isfinite(p.top_p) or not 0 <= p.top_p <= 1:
        raise InvalidArgument.for_field(f"{field}.top_p", "must be within (0, 1] (0 = default 1)")
    if p.top_k < 0:
        raise InvalidArgument.for_field(f"{field}.top_k", "must not be negative")
    if len(p.stop) > MAX_STOPS or any(not s or len(s) > MAX_STOP_CHARS for s in p.stop):
        raise InvalidArgument.for_field(
            f"{field}.stop", f"at most {MAX_STOPS} non-empty strings of ≤ {MAX_STOP_CHARS} chars")
    if p.speculation not in _SPECULATION:
        raise InvalidArgument.for_field(f"{field}.speculation", "unknown value")
    return {"max_new_tokens": p.max_new_tokens or 128, "temperature": p.temperature,
            "top_p": p.top_p or 1.0, "top_k": p.top_k,
            "seed": p.seed if p.HasField("seed") else None, "stop": list(p.stop),
            "speculation": _SPECULATION[p.speculation]}


def input_to_dict(request, field_prefix: str = "") -> dict:
    """{"prompt": str} or {"messages": [...]} from a message with the `input` oneof."""
    which = request.WhichOneof("input")
    if which is None:
        raise InvalidArgument.for_field(f"{field_prefix}prompt", "is required (or conversation)")
    if which == "prompt":
        if not request.prompt.strip():
            raise InvalidArgument.for_field(f"{field_prefix}prompt", "is empty")
        if len(request.prompt) > MAX_PROMPT_CHARS:
            raise InvalidArgument.for_field(f"{field_prefix}prompt", "is longer than the "
                                            "model's context window", reason="INPUT_TOO_LARGE")
        return {"prompt": request.prompt}
    messages = request.conversation.messages
    field = f"{field_prefix}conversation.messages"
    if not messages:
        raise InvalidArgument.for_field(field, "is empty")
    for k, m in enumerate(messages):
        if m.role not in ROLES:
            raise InvalidArgument.for_field(f"{field}[{k}].role", f"must be one of {ROLES}")
    if sum(len(m.content) for m in messages) > MAX_PROMPT_CHARS:
        raise InvalidArgument.for_field(field, "is longer than the model's context window",
                                        reason="INPUT_TOO_LARGE")
    return {"messages": [{"role": m.role, "content": m.content} for m in messages]}


def generate_request(request) -> dict:
    return {**input_to_dict(request), "params": params_to_dict(request.parameters)}


def submit_request(request: pb.SubmitGenerateRequest) -> dict:
    if not request.items:
        raise InvalidArgument.for_field("items", "is empty")
    if len(request.items) > MAX_ITEMS:
        raise InvalidArgument.for_field("items", f"has {len(request.items)} items; the limit "
                                        f"is {MAX_ITEMS}", reason="INPUT_TOO_LARGE")
    default = params_to_dict(request.parameters)
    items = []
    for k, item in enumerate(request.items):
        params = (params_to_dict(item.parameters, f"items[{k}].parameters")
                  if item.HasField("parameters") else default)
        items.append({"custom_id": item.custom_id or str(k),
                      **input_to_dict(item, f"items[{k}]."), "params": params})
    return {"items": items}


def response_from_result(result: dict) -> pb.GenerateResponse:
    usage = result.get("usage", {})
    return pb.GenerateResponse(
        text=result.get("text", ""), token_ids=result.get("token_ids", []),
        finish_reason=_FINISH.get(result.get("finish_reason", ""),
                                  pb.FINISH_REASON_UNSPECIFIED),
        usage=pb.Usage(**{k: int(usage.get(k, 0)) for k in (
            "prompt_tokens", "completion_tokens", "forward_passes", "accepted_draft_tokens",
            "draft_steps")}),
        timing=pb.Timing(seconds=result.get("seconds", 0.0),
                         first_token_seconds=result.get("first_token_seconds") or 0.0,
                         tokens_per_second=result.get("tokens_per_second", 0.0)),
        model_version=result.get("model_version", ""))


def delta(text: str, token_ids: list[int]) -> pb.GenerateStreamResponse:
    return pb.GenerateStreamResponse(delta=pb.TokenDelta(text=text, token_ids=token_ids))


def final(result: dict) -> pb.GenerateStreamResponse:
    return pb.GenerateStreamResponse(final=response_from_result(result))


def submit_summary(result: dict):
    """The job's Any response for SubmitGenerate: none (results are the JSONL artifact)."""
    from google.protobuf import empty_pb2

    return empty_pb2.Empty()
