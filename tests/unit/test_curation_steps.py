"""Curation building blocks against the real libraries: shard formats, the typed pipeline spec,
the filters (datatrove's heuristics, py3langid, alt-profanity-check), run_filters, and exact and
MinHash dedup."""

from __future__ import annotations

import gzip
import inspect
import json
import random
from collections import Counter

import pytest

from workers.curation.documents import Document
from workers.curation.steps import STEP_TYPES, PipelineError, parse_pipeline

GOOD = ("The committee met on Tuesday to review the annual budget and the plans for the new "
        "library. Members agreed that the building should open in the spring, and they asked "
        "the architect to prepare revised drawings. The chair noted that the city had already "
        "set aside most of the money, but that a public appeal would be needed to cover the "
        "rest. Several residents spoke in favour of the project, and one asked whether the "
        "reading room would stay open in the evenings. The committee will meet again next "
        "month to hear the results of the survey and to decide on the final design.")
FRENCH = ("Le comité s'est réuni mardi pour examiner le budget annuel et les projets de la "
          "nouvelle bibliothèque. Les membres ont convenu que le bâtiment devrait ouvrir au "
          "printemps, et ils ont demandé à l'architecte de préparer de nouveaux plans.")
HEURISTICS = ["gopher_repetition", "gopher_quality", "c4_quality", "fineweb_quality"]


# --- shards ---------------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["s.jsonl", "s.jsonl.gz", "s.jsonl.zst", "s.parquet"])
def test_round_trip_keeps_ids_text_and_metadata(name):
    pytest.importorskip("pyarrow")
    pytest.importorskip("zstandard")
    from workers.curation.shards import read_shard, write_shard

    docs = [Document("a", "Héllo\nwörld \u2028 ✓", {"url": "https://x", "n": 3}),
            Document("b", "", {}), Document("c", "plain", {"tags": ["x", "y"], "m": None})]
    data = write_shard(docs, name)
    assert read_shard(data, name) == docs
    assert write_shard(docs, name) == data  # deterministic bytes (gzip without mtime)


def test_jsonl_default_ids_custom_fields_and_blank_lines():
    from workers.curation.shards import read_shard

    data = b'{"content": "one", "src": "x"}\n\n{"content": "two", "key": 7}\n'
    docs = read_shard(data, "part.jsonl", text_field="content", id_field="key")
    assert docs == [Document("part.jsonl#1", "one", {"src": "x"}), Document("7", "two", {})]


@pytest.mark.parametrize("data,message", [
    (b'{"text": "ok"}\n\n{"text": oops}\n', "s.jsonl:3: not JSON"),
    (b'{"text": "ok"}\n{"body": "no text"}\n', "s.jsonl:2: field 'text' is missing"),
    (b'{"text": 5}\n', "s.jsonl:1: field 'text' is a int, not a string"),
    (b'["text"]\n', "s.jsonl:1: a list, not a JSON object"),
    (b'{"text": "\xff"}\n', "s.jsonl:1: not UTF-8"),
])
def test_bad_line_names_shard_and_line(data, message):
    from workers.curation.shards import ShardError, read_shard

    with pytest.raises(ShardError) as exc:
        read_shard(data, "s.jsonl")
    assert str(exc.value).startswith(message)


def test_bad_shards_as_a_whole():
    pytest.importorskip("pyarrow")
    pytest.importorskip("zstandard")
    from workers.curation.shards import ShardError, read_shard, write_shard

    with pytest.raises(ShardError, match=r"^s\.jsonl\.gz: cannot decompress"):
        read_shard(b"not gzip", "s.jsonl.gz")
    zst = write_shard([Document(str(i), "some text " * i) for i in range(50)], "s.jsonl.zst")
    with pytest.raises(ShardError, match=r"^s\.jsonl\.zst: cannot decompress: the data ends"):
        read_shard(zst[:-5], "s.jsonl.zst")
    with pytest.raises(ShardError, match=r"^s\.txt: unknown shard format"):
        read_shard(b"", "s.txt")
    with pytest.raises(ShardError, match=r"^s\.parquet: no column 'body'"):
        read_shard(write_shard([Document("a", "x")], "s.parquet"), "s.parquet", text_field="body")
    with pytest.raises(ShardError, match="metadata key 'text'"):
        write_shard([Document("a", "x", {"text": "y"})], "s.jsonl")
    assert gzip.decompress(write_shard([Document("a", "x", {"k": 1})], "s.jsonl.gz")) == \
        (json.dumps({"id": "a", "text": "x", "k": 1}) + "\n").encode()


# --- pipeline spec --------------------------------------------------------------------------

def test_parse_pipeline_types_defaults_and_round_trip():
    spec = [{"step": "language", "languages": ["en", "de"], "min_score": 0.5},
            {"step": "gopher_repetition", "top_n_grams": [[2, 0.25], [3, 0.2]]},
            {"step": "gopher_quality", "min_doc_words": None},
            {"step": "c4_quality"}, {"step": "fineweb_quality"}, {"step": "profanity"},
            {"step": "exact_dedup"}, {"step": "minhash_dedup", "threshold": 1}]
    steps = parse_pipeline(spec)
    assert [s.step for s in steps] == [e["step"] for e in spec]
    assert steps[0].languages == ["en", "de"] and steps[0].min_score == 0.5
    assert steps[1].top_n_grams == ((2, 0.25), (3, 0.2))
    assert steps[2].min_doc_words is None and steps[2].max_doc_words == 100000
    assert steps[7].threshold == 1.0 and steps[7].num_perm == 128
    assert [s.kind for s in steps[-2:]] == ["dedup", "dedup"]
    assert parse_pipeline([s.as_dict() for s in steps]) == steps
    assert set(STEP_TYPES) >= {"language", "gopher_quality", "gopher_repetition", "c4_quality",
                               "fineweb_quality", "profanity", "exact_dedup", "minhash_dedup"}


@pytest.mark.parametrize("spec,field,problem", [
    ([{"step": "language"}, {"step": "perplexity"}], "pipeline[1].step", "unknown step"),
    ([{"languages": ["en"]}], "pipeline[0].step", "is missing"),
    ([{"step": "c4_quality"}, {"step": "exact_dedup"},
      {"step": "minhash_dedup", "thresold": 0.8}], "pipeline[2].thresold", "unknown parameter"),
    ([{"step": "minhash_dedup", "threshold": 1.5}], "pipeline[0].threshold", "less than or equal"),
    ([{"step": "profanity", "threshold": "0.5"}], "pipeline[0].threshold", "valid number"),
    ([{"step": "c4_quality", "filter_policy": "yes"}], "pipeline[0].filter_policy", "boolean"),
    ([{"step": "language", "languages": "en"}], "pipeline[0].languages", "valid list"),
    ([{"step": "language", "languages": ["English"]}], "pipeline[0].languages", "ISO 639"),
    ([{"step": "gopher_repetition", "dup_n_grams": [[5, "x"]]}],
     "pipeline[0].dup_n_grams[0][1]", "valid number"),
    (["language"], "pipeline[0]", "must be a mapping"),
    ([], "pipeline", "has no steps"),
    ({"step": "language"}, "pipeline", "must be a list"),
])
def test_parse_pipeline_names_the_bad_field(spec, field, problem):
    with pytest.raises(PipelineError) as exc:
        parse_pipeline(spec)
    assert exc.value.field == field
    assert problem in exc.value.problem
    assert str(exc.value).startswith(f"{field}: ")


def test_parse_pipeline_reports_every_violation():
    with pytest.raises(PipelineError) as exc:
        parse_pipeline([{"step": "nope"}, {"step": "profanity", "threshold": 0},
                        {"step": "minhash_dedup", "num_perm": 8, "bands": 4}])
    assert [f for f, _ in exc.value.violations] == [
        "pipeline[0].step", "pipeline[1].threshold", "pipeline[2].num_perm",
        "pipeline[2].bands"]
    assert "(and 3 more)" in str(exc.value)


def test_heuristic_defaults_are_datatrove_defaults():
    filters = pytest.importorskip("datatrove.pipeline.filters")
    pairs = {"gopher_quality": filters.GopherQualityFilter,
             "gopher_repetition": filters.GopherRepetitionFilter,
             "c4_quality": filters.C4QualityFilter,
             "fineweb_quality": filters.FineWebQualityFilter}
    for step, cls in pairs.items():
        ours = STEP_TYPES[step]().model_dump()
        theirs = {n: p.default for n, p in inspect.signature(cls.__init__).parameters.items()
                  if n in ours}
        assert ours == theirs, step


# --- filters --------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def filters():
    pytest.importorskip("datatrove")
    pytest.importorskip("spacy")
    pytest.importorskip("py3langid")
    pytest.importorskip("profanity_check")
    from workers.curation.filters import build_filter

    steps = parse_pipeline([{"step": s} for s in ["language", *HEURISTICS, "profanity"]])
    return {s.step: build_filter(s) for s in steps}


@pytest.mark.parametrize("step,bad,reason", [
    ("language", FRENCH, "language:fr"),
    ("gopher_quality", "Too short to be a document.", "gopher_quality:gopher_short_doc"),
    ("gopher_repetition", "Buy cheap watches online today.\n" * 40,
     "gopher_repetition:dup_line_frac"),
    ("c4_quality", "One sentence only. Then another one here.", "c4_quality:too_few_sentences"),
    ("fineweb_quality", "\n".join(f"item number {i} in the list without an end" for i in
                                  range(30)), "fineweb_quality:line_punct_ratio"),
    ("profanity", "You are a fucking idiot and a piece of shit.", "profanity:profane"),
])
def test_each_filter_keeps_good_english_and_removes_bad(filters, step, bad, reason):
    f = filters[step]
    assert f.name == step
    assert f.decide(Document("good", GOOD)).keep
    decision = f.decide(Document("bad", bad))
    assert not decision.keep and decision.reason == reason


def test_language_low_score_and_unknown_code(filters):
    from workers.curation.filters import build_filter

    f = build_filter(parse_pipeline([{"step": "language", "min_score": 0.5}])[0])
    assert f.decide(Document("d", "the cat sat on the mat")).keep  # en, p ~0.95
    assert f.decide(Document("d", "the cat")).reason == "language:low_score"  # en, p ~0.16
    with pytest.raises(PipelineError, match="does not know"):
        build_filter(parse_pipeline([{"step": "language", "languages": ["xx"]}])[0])


def test_build_filter_refuses_dedup_steps():
    from workers.curation.filters import build_filter

    with pytest.raises(ValueError, match="minhash_dedup is a dedup step"):
        build_filter(parse_pipeline([{"step": "minhash_dedup"}])[0])


def test_run_filters_first_failure_wins_and_counts(filters):
    from workers.curation.filters import run_filters

    short = Document("short", "Too short.")  # fails gopher_quality and c4_quality
    good = Document("good", GOOD + "\nA line without an end", {"src": "t"})
    chain = [filters["gopher_quality"], filters["c4_quality"]]
    stats = Counter()
    kept, removed = run_filters([short, good, Document("fr", FRENCH)], chain, stats)
    assert [d.id for d in kept] == ["good"]
    assert [(d.id, r) for d, r in removed] == [("short", "gopher_quality:gopher_short_doc"),
                                               ("fr", "gopher_quality:gopher_short_doc")]
    assert stats == Counter({"gopher_quality.kept": 1, "c4_quality.kept": 1,
                             "gopher_quality.removed:gopher_short_doc": 2})
    # C4 drops the unterminated line of a kept document; the input stays as it was
    assert kept[0].text == GOOD and kept[0].metadata == {"src": "t"}
    assert good.text.endswith("without an end")
    # the other order: C4 is first to fail
    _, removed = run_filters([short], chain[::-1])
    assert removed[0][1] == "c4_quality:too_few_sentences"


def test_run_filters_batches_profanity(filters):
    from workers.curation.filters import run_filters

    docs = [Document(str(i), GOOD if i % 2 else "fuck this shit, you moron") for i in range(6)]
    stats = Counter()
    kept, removed = run_filters(docs, [filters["profanity"]], stats)
    assert [d.id for d in kept] == ["1", "3", "5"]
    assert stats == Counter({"profanity.kept": 3, "profanity.removed:profane": 3})


# --- dedup ----------------------------------------------------------------------------------

def test_exact_keys_collapse_case_whitespace_and_punctuation():
    from workers.curation.dedup import duplicate_groups, exact_keys

    docs = [Document("b", "Hello,   World!\n"), Document("a", "hello world"),
            Document("c", "HELLO\tWORLD..."), Document("d", "hello there world")]
    keys = exact_keys(docs)
    assert keys[0] == keys[1] == keys[2] != keys[3]
    by_doc = {d.id: k for d, k in zip(docs, keys, strict=True)}
    assert duplicate_groups(by_doc) == {"a": "a", "b": "a", "c": "a"}


def _edited(words: list[str], fraction: float, seed: int) -> str:
    rng = random.Random(seed)
    words = list(words)
    for i in rng.sample(range(len(words)), round(fraction * len(words))):
        words[i] = rng.choice(["alpha", "beta", "gamma", "delta"])
    return " ".join(words)


def test_minhash_finds_an_edited_copy_not_an_unrelated_doc():
    pytest.importorskip("datasketch")
    from workers.curation.dedup import minhash_signatures, near_duplicate_groups

    words = (GOOD + " " + FRENCH + " " + GOOD.upper()).split()  # ~230 words
    other = " ".join(reversed(GOOD.split())) + " " + FRENCH
    docs = [Document("orig", " ".join(words)), Document("copy", _edited(words, 0.03, 1)),
            Document("other", other)]
    sigs = minhash_signatures(docs)
    assert all(s.shape == (128,) for s in sigs)
    # A 3% word edit breaks up to 15% of the 5-word shingles: Jaccard ~0.74, so threshold 0.7.
    stored = {d.id: s.tobytes() for d, s in zip(docs, sigs, strict=True)}
    assert near_duplicate_groups(stored, threshold=0.7) == {"copy": "copy", "orig": "copy"}
    assert near_duplicate_groups(stored, threshold=0.95) == {}
    with pytest.raises(ValueError, match="64 values, not 128"):
        near_duplicate_groups({"x": sigs[0][:64]})
