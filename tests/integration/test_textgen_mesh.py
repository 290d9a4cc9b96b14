"""Text generation through the whole mesh: gRPC gateway → Celery on Redis → worker running the
SmolLM2 ONNX export from the S3 registry. Nothing here is faked."""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor

import grpc
import pytest
from jobmesh.jobs.v1 import job_pb2, job_service_pb2_grpc
from jobmesh.jobs.v1 import job_service_pb2 as jobs_pb
from jobmesh.textgen.v1 import textgen_service_pb2 as pb
from jobmesh.textgen.v1 import textgen_service_pb2_grpc

from tests.conftest import auth
from tests.integration.helpers import details

pytestmark = pytest.mark.integration

CODE = "def fibonacci(n):\n    \"\"\"Return the n-th Fibonacci number.\"\"\"\n"


def chat(text: str, **params) -> pb.GenerateRequest:
    return pb.GenerateRequest(
        conversation=pb.Conversation(messages=[pb.ChatMessage(role="user", content=text)]),
        parameters=pb.GenerationParameters(**params))


@pytest.fixture
def tg(textgen_channel):
    return textgen_service_pb2_grpc.TextGenerationServiceStub(textgen_channel)


def test_speculation_is_lossless_through_the_mesh(tg):
    runs = {}
    for mode in (pb.SPECULATION_OFF, pb.SPECULATION_TOKEN_RECYCLING,
                 pb.SPECULATION_PROMPT_LOOKUP, pb.SPECULATION_AUTO):
        req = pb.GenerateRequest(prompt=CODE, parameters=pb.GenerationParameters(
            max_new_tokens=40, speculation=mode))
        runs[mode] = tg.Generate(req, metadata=auth(), timeout=120)
    off = runs[pb.SPECULATION_OFF]
    assert off.usage.completion_tokens == len(off.token_ids) > 0
    assert off.usage.forward_passes >= off.usage.completion_tokens  # one token per pass
    for mode, resp in runs.items():
        assert list(resp.token_ids) == list(off.token_ids), pb.Speculation.Name(mode)
        assert resp.text == off.text
    assert off.model_version.startswith("smollm2-135m-instruct@")


def test_stream_deltas_add_up_to_the_final_text(tg):
    events = list(tg.GenerateStream(pb.GenerateStreamRequest(
        conversation=pb.Conversation(messages=[pb.ChatMessage(role="user",
                                                               content="Name three colours.")]),
        parameters=pb.GenerationParameters(max_new_tokens=24)), metadata=auth(), timeout=120))
    deltas = [e.delta for e in events if e.HasField("delta")]
    final = events[-1]
    assert final.HasField("final") and len(deltas) >= 2
    assert "".join(d.text for d in deltas) == final.final.text
    assert [t for d in deltas for t in d.token_ids] == list(final.final.token_ids)
    assert final.final.timing.first_token_seconds > 0


def test_stop_sequences_and_max_tokens(tg):
    resp = tg.Generate(chat("Count from 1 to 20, separated by commas.", max_new_tokens=60,
                            stop=["7"]), metadata=auth(), timeout=120)
    assert "7" not in resp.text
    assert resp.finish_reason in (pb.FINISH_REASON_STOP, pb.FINISH_REASON_EOS)
    short = tg.Generate(chat("Tell me a long story.", max_new_tokens=5), metadata=auth(),
                        timeout=120)
    assert short.usage.completion_tokens == 5 and short.finish_reason == pb.FINISH_REASON_LENGTH


def test_seeded_sampling_is_reproducible(tg):
    req = chat("Write a one-line poem.", max_new_tokens=16, temperature=0.9, top_p=0.9, seed=7)
    a = tg.Generate(req, metadata=auth(), timeout=120)
    b = tg.Generate(req, metadata=auth(), timeout=120)
    assert list(a.token_ids) == list(b.token_ids)


@pytest.mark.parametrize("params,field", [
    (dict(max_new_tokens=-1), "parameters.max_new_tokens"),
    (dict(top_p=1.5), "parameters.top_p"),
    (dict(temperature=-0.1), "parameters.temperature"),
    (dict(max_new_tokens=2048), "parameters.max_new_tokens"),  # prompt + 2048 > context
])
def test_bad_parameters_name_the_field(tg, params, field):
    prompt = "word " * 7000 if params.get("max_new_tokens") == 2048 else "hi"  # ~7k tokens
    with pytest.raises(grpc.RpcError) as e:
        tg.Generate(chat(prompt, **params), metadata=auth(), timeout=60)
    assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT, e.value.details()
    assert details(e.value)["violations"][0][0] == field


def test_empty_inputs_name_the_field(tg):
    with pytest.raises(grpc.RpcError) as e:
        tg.Generate(pb.GenerateRequest(conversation=pb.Conversation()), metadata=auth(),
                    timeout=30)
    assert details(e.value)["violations"][0][0] == "conversation.messages"
    with pytest.raises(grpc.RpcError) as e:
        tg.Generate(pb.GenerateRequest(prompt="   "), metadata=auth(), timeout=30)
    assert details(e.value)["violations"][0][0] == "prompt"
    with pytest.raises(grpc.RpcError) as e:
        tg.Generate(pb.GenerateRequest(prompt="word " * 9000), metadata=auth(), timeout=60)
    assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert details(e.value)["violations"][0][0] == "prompt"


def test_concurrent_requests_each_get_their_own_greedy_answer(tg):
    prompts = ["What is 2+2?", "Name a fruit.", "Say hello in French."]
    alone = [tg.Generate(chat(p, max_new_tokens=12, speculation=pb.SPECULATION_OFF),
                         metadata=auth(), timeout=120) for p in prompts]
    with ThreadPoolExecutor(len(prompts)) as pool:
        together = list(pool.map(lambda p: tg.Generate(chat(p, max_new_tokens=12),
                                                       metadata=auth(), timeout=120), prompts))
    assert [r.text for r in together] == [r.text for r in alone]


def test_submit_generate_job_writes_jsonl_with_per_item_errors(tg, textgen_channel, stack):
    from shared.config import Settings
    from shared.storage.artifacts import ArtifactRef, ArtifactStore

    jobs = job_service_pb2_grpc.JobServiceStub(textgen_channel)
    sub = tg.SubmitGenerate(pb.SubmitGenerateRequest(
        request_id="tg-batch-1", parameters=pb.GenerationParameters(max_new_tokens=8),
        items=[pb.GenerateItem(custom_id="a", prompt="The capital of France is"),
               pb.GenerateItem(custom_id="b", prompt="x " * 9000),  # over the context window
               pb.GenerateItem(custom_id="c", prompt="One, two, three,")]),
        metadata=auth(), timeout=30)
    done = jobs.WaitJob(jobs_pb.WaitJobRequest(name=sub.job.name), metadata=auth(),
                        timeout=120).job
    assert done.state == job_pb2.JOB_STATE_SUCCEEDED
    assert (done.progress.done, done.progress.total) == (3, 3)
    [ref] = [a for a in done.result.artifacts if a.key.endswith("/results.jsonl")]
    settings = Settings(**{k.removeprefix("JOBMESH_").lower(): v for k, v in stack.env.items()})
    raw = ArtifactStore.from_settings(settings).get_bytes(ArtifactRef(ref.bucket, ref.key))
    rows = {r["custom_id"]: r for r in map(json.loads, raw.decode().splitlines())}
    assert rows["a"]["response"]["text"] and rows["c"]["response"]["text"]
    assert rows["b"]["error"]["code"] == "INVALID_ARGUMENT"


def test_batch_of_prompts_matches_generate(tg, textgen_stack):
    """CreateBatch on the textgen gateway: each line's response is what Generate returns for the
    same request (greedy), and a line over the context window fails alone at the worker."""
    from shared.client import Client, ClientSettings
    from tests.conftest import TENANT_KEY

    prompts = ["1, 2, 3, 4,", "The capital of France is", "def add(a, b):"]
    lines = [{"custom_id": f"p{k}", "body": {"prompt": p, "parameters": {"maxNewTokens": 8}}}
             for k, p in enumerate(prompts)]
    lines.append({"custom_id": "too-long", "body": {
        "prompt": "word " * 9000, "parameters": {"maxNewTokens": 8}}})
    data = ("\n".join(json.dumps(x) for x in lines) + "\n").encode()
    with Client(ClientSettings(endpoint=textgen_stack, api_key=TENANT_KEY), timeout_s=120) as c:
        job = c.create_batch("textgen", "Generate", data)
        job = c.wait_job(job.name, timeout_s=120)
        assert job.state == job_pb2.JOB_STATE_SUCCEEDED, job
        assert (job.batch.request_counts.completed, job.batch.request_counts.failed) == (3, 1)
        _, ok, bad = c.batch_results(job.name)
    for row in ok:
        k = int(row["custom_id"][1:])
        want = tg.Generate(pb.GenerateRequest(prompt=prompts[k], parameters=pb.GenerationParameters(
            max_new_tokens=8, speculation=pb.SPECULATION_OFF)), metadata=auth(), timeout=60)
        assert [int(t) for t in row["response"]["tokenIds"]] == list(want.token_ids)
    assert [(e["custom_id"], e["error"]["code"]) for e in bad] == [("too-long",
                                                                   "INVALID_ARGUMENT")]
