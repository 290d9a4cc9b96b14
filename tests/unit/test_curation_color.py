"""CoLoR-Filter: the step's parameters, the global cut over all shards' scores (pure logic on
synthetic scores), the score arithmetic on the real SmolLM2 export (prior = conditional gives
0; skipped when the export is missing), and the LoRA merge that makes the conditional model
exportable (a tiny random Llama, so it runs in seconds)."""

from __future__ import annotations

import math

import pytest

from workers.curation.color import REASON, color_scores, removal_reason, select
from workers.curation.documents import Document
from workers.curation.pipeline import global_duplicates, order_note, process_shard
from workers.curation.steps import ColorFilterStep, PipelineError, parse_pipeline

# -- the step ---------------------------------------------------------------------------------


def test_step_parses_with_either_cut_and_defaults_the_prior():
    (step,) = parse_pipeline([{"step": "color_filter", "conditional_model": "py-lm@lora-1",
                               "keep_fraction": 0.25}])
    assert step.kind == "select" and step.prior_model == "smollm2-135m-instruct"
    assert step.max_tokens == 256 and step.threshold is None
    assert parse_pipeline([step.as_dict()]) == [step]
    (step,) = parse_pipeline([{"step": "color_filter", "conditional_model": "py-lm",
                               "threshold": -0.1}])
    assert step.threshold == -0.1


@pytest.mark.parametrize("params,field,problem", [
    ({"conditional_model": "m"}, "pipeline[0]", "exactly one of keep_fraction and threshold"),
    ({"conditional_model": "m", "keep_fraction": 0.5, "threshold": 0.0}, "pipeline[0]",
     "exactly one"),
    ({"conditional_model": "m", "keep_fraction": 0.0}, "pipeline[0].keep_fraction",
     "greater than 0"),
    ({"conditional_model": "m", "keep_fraction": 1.5}, "pipeline[0].keep_fraction",
     "less than or equal to 1"),
    ({"conditional_model": "M@v1", "threshold": 0.0}, "pipeline[0].conditional_model",
     "registry model"),
    ({"conditional_model": "m@", "threshold": 0.0}, "pipeline[0].conditional_model",
     "registry model"),
    ({"conditional_model": "m", "prior_model": "a b", "threshold": 0.0},
     "pipeline[0].prior_model", "registry model"),
    ({"keep_fraction": 0.5}, "pipeline[0].conditional_model", "Field required"),
    ({"conditional_model": "m", "threshold": 0.0, "max_tokens": 4},
     "pipeline[0].max_tokens", "greater than or equal to 8"),
])
def test_bad_parameters_name_the_field(params, field, problem):
    with pytest.raises(PipelineError) as err:
        parse_pipeline([{"step": "color_filter", **params}])
    assert err.value.field == field and problem in err.value.problem


# -- the global cut ---------------------------------------------------------------------------

def _step(**cut) -> ColorFilterStep:
    return ColorFilterStep(conditional_model="m", **cut)


def test_top_fraction_keeps_ceil_of_n_highest_and_nan_never():
    scores = {"a": 0.5, "b": -0.2, "c": 1.5, "d": math.nan, "e": 0.1, "f": 0.9, "g": 0.0}
    removed = select(scores, _step(keep_fraction=0.4))  # ceil(0.4 * 7) = 3 kept
    assert set(scores) - set(removed) == {"c", "f", "a"}
    assert removed["b"] == -0.2 and math.isnan(removed["d"])
    assert set(select(scores, _step(keep_fraction=1.0))) == {"d"}  # NaN goes even at 100%


def test_ties_are_broken_by_id_so_shard_order_does_not_matter():
    scores = {"s2/x": 0.3, "s1/y": 0.3, "s1/a": 0.3, "s0/z": 0.1}
    kept = set(scores) - set(select(scores, _step(keep_fraction=0.5)))
    assert kept == {"s1/a", "s1/y"}
    reordered = dict(reversed(list(scores.items())))
    assert set(reordered) - set(select(reordered, _step(keep_fraction=0.5))) == kept


def test_threshold_keeps_scores_at_or_above_it():
    scores = {"a": 0.2, "b": 0.19999, "c": 0.2000001, "d": math.nan}
    assert set(select(scores, _step(threshold=0.2))) == {"b", "d"}


def test_global_stage_cuts_across_shards_after_dedup():
    steps = parse_pipeline([
        {"step": "color_filter", "conditional_model": "m", "keep_fraction": 0.5},
        {"step": "exact_dedup"}])  # listed first, but dedup keys are index 1
    keys = [{"0": {"s0/a": "0.9", "s0/b": "0.1"}, "1": {"s0/a": "k1", "s0/b": "k2"}},
            {"0": {"s1/a": "0.8", "s1/c": "nan"}, "1": {"s1/a": "k3", "s1/c": "k4"}}]
    removed, stats = global_duplicates(steps, keys)
    assert removed == {"s0/b": removal_reason(steps[0], 0.1),
                       "s1/c": "color_filter:below_cut:nan"}
    assert removed["s0/b"] == f"color_filter:{REASON}:0.1000"
    assert stats["color_filter.kept"] == 2 and stats[f"color_filter.removed:{REASON}"] == 2
    assert order_note(parse_pipeline([
        {"step": "color_filter", "conditional_model": "m", "threshold": 0.0},
        {"step": "language"}]))


def test_global_stage_sees_only_what_earlier_global_steps_kept():
    steps = parse_pipeline([
        {"step": "exact_dedup"},
        {"step": "color_filter", "conditional_model": "m", "keep_fraction": 0.5}])
    keys = [{"0": {"a": "k", "b": "k", "c": "j", "d": "i"},
             "1": {"a": "0.1", "b": "5.0", "c": "0.3", "d": "0.2"}}]
    removed, _ = global_duplicates(steps, keys)
    # b duplicates a and goes first; of a, c, d the top ceil(1.5) = 2 stay
    assert removed == {"b": "exact_dedup:duplicate_of:a",
                       "a": "color_filter:below_cut:0.1000"}


def test_shard_stage_needs_the_models():
    steps = parse_pipeline([{"step": "color_filter", "conditional_model": "m",
                             "threshold": 0.0}])
    with pytest.raises(ValueError, match="model_folder"):
        process_shard([Document("a", "text")], steps)


# -- real scores ------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def lm_folder():
    from workers.textgen.export import default_export_dir, is_valid

    folder = default_export_dir()
    if not is_valid(folder):
        pytest.skip("SmolLM2 export missing: python -m workers.textgen.export")
    return folder


def test_same_model_twice_scores_zero_and_short_text_nan(lm_folder):
    docs = [Document("a", "The quick brown fox jumps over the lazy dog. " * 3),
            Document("b", "x")]
    calls = []

    def folder(ref: str):
        calls.append(ref)
        return lm_folder

    scores = color_scores(docs, lm_folder, lm_folder, 32)
    assert scores[0] == pytest.approx(0.0, abs=1e-9) and math.isnan(scores[1])
    steps = parse_pipeline([{"step": "color_filter", "conditional_model": "m@v",
                             "threshold": 0.0, "max_tokens": 32}])
    outcome = process_shard(docs, steps, model_folder=folder)
    assert calls == ["smollm2-135m-instruct", "m@v"]
    assert float(outcome.keys["0"]["a"]) == pytest.approx(0.0, abs=1e-9)
    assert outcome.keys["0"]["b"] == "nan"
    assert [d.metadata["color_score"] for d in outcome.kept] == [0.0, None]
    assert docs[0].metadata == {}  # the input documents are not changed


# -- merging the adapter ----------------------------------------------------------------------

def test_merged_model_computes_what_the_adapter_computes():
    torch = pytest.importorskip("torch")
    pytest.importorskip("peft")
    from transformers import LlamaConfig, LlamaForCausalLM

    from workers.compression.lora import LoraConfig, merged_model, task_loss, train_lora

    torch.manual_seed(0)
    model = LlamaForCausalLM(LlamaConfig(
        vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64))
    model.eval()
    blocks = torch.randint(0, 64, (8, 16))
    cfg = LoraConfig(rank=4, alpha=8, steps=5, seq_len=16, batch=4, lr=1e-2)
    adapter = train_lora(model, blocks, cfg)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    merged = merged_model(model, adapter, cfg)
    with torch.no_grad():
        plain = float(merged(input_ids=blocks, labels=blocks).loss)
    assert plain == pytest.approx(task_loss(model, blocks, adapter, cfg), rel=1e-5)
    assert plain != pytest.approx(task_loss(model, blocks, None, cfg), rel=1e-5)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    with pytest.raises(ValueError, match="names no module"):
        merged_model(model, {"base_model.model.nowhere.lora_A.weight": torch.zeros(4, 32),
                             "base_model.model.nowhere.lora_B.weight": torch.zeros(32, 4)},
                     cfg)


# -- the fine-tune request --------------------------------------------------------------------

def _finetune(**fields):
    from jobmesh.curation.v1 import curation_service_pb2 as pb

    return pb.SubmitFineTuneRequest(**{"model_name": "py-lm", "target_texts": ["a b c"],
                                       **fields})


def test_finetune_request_defaults():
    from services.curation.convert import finetune_request

    req = finetune_request(_finetune())
    assert req["lora"] == {"rank": 8, "steps": 30, "seq_len": 128, "batch": 4, "lr": 1e-3}
    assert req["texts"] == ["a b c"] and req["text_field"] == "text" and not req["serve"]


@pytest.mark.parametrize("fields,field", [
    ({"model_name": "Py LM"}, "model_name"),
    ({"model_name": "smollm2-135m-instruct"}, "model_name"),
    ({"target_texts": []}, "target"),
    ({"target_texts": ["x"] * 2001}, "target_texts"),
    ({"target_texts": ["x" * 1_000_001]}, "target_texts"),
    ({"lora_rank": 65}, "lora_rank"),
    ({"steps": -1}, "steps"),
    ({"steps": 40, "batch": 4, "seq_len": 128}, "steps"),  # 20,480 tokens > 16,384
    ({"seq_len": 8}, "seq_len"),
    ({"learning_rate": 2.0}, "learning_rate"),
    ({"text_field": "bad field"}, "text_field"),
])
def test_finetune_request_names_the_bad_field(fields, field):
    from services.curation.convert import finetune_request
    from shared.errors import InvalidArgument

    with pytest.raises(InvalidArgument) as err:
        finetune_request(_finetune(**fields))
    assert field in [f for f, _ in err.value.field_violations]
