"""The curation pipeline as typed steps.

A user writes the pipeline as YAML, a list of `{step: NAME, ...params}`; `parse_pipeline` turns
it into step specs (frozen pydantic models, strict types, unknown parameters refused) or raises
one `PipelineError` that names every bad field as `pipeline[i].param`. The specs only describe;
`filters.build_filter` and `dedup` act on them, so this module imports no curation library and a
gateway can validate a pipeline before any worker sees it.

Kinds: a "filter" step decides per document (filters.build_filter); a "dedup" step decides over
the whole corpus (dedup.py); a "select" step scores each document per shard and keeps a share of
the whole corpus (color.py). Parameters and defaults of the four heuristic filters are those of
datatrove 0.10.1's constructors (a unit test keeps them equal). New steps register with
`@register`.
"""

from __future__ import annotations

import re
from typing import Any, ClassVar, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

_LANGUAGE_CODE = re.compile(r"^[a-z]{2,3}$")


class PipelineError(ValueError):
    """A pipeline spec is unusable. `field` names the first bad field ("pipeline[2].threshold"),
    `problem` says why; `violations` lists every (field, problem) found, so a user fixes the
    spec in one round. str() is "field: problem"."""

    def __init__(self, field: str, problem: str,
                 violations: list[tuple[str, str]] | None = None):
        self.field = field
        self.problem = problem
        self.violations = violations or [(field, problem)]
        more = len(self.violations) - 1
        super().__init__(f"{field}: {problem}" + (f" (and {more} more)" if more else ""))


class StepSpec(BaseModel):
    """One step's parameters. Subclasses set `step` (the YAML name) and `kind`."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)
    step: ClassVar[str]
    kind: ClassVar[str]  # "filter" | "dedup" | "select"
    needs_lm: ClassVar[bool] = False  # scores with the reference LM (SmolLM2 from the registry)

    def as_dict(self) -> dict[str, Any]:
        """The spec as the user would write it (parse_pipeline([s.as_dict()]) == [s])."""
        return {"step": self.step, **self.model_dump()}


STEP_TYPES: dict[str, type[StepSpec]] = {}


def register(cls: type[StepSpec]) -> type[StepSpec]:
    STEP_TYPES[cls.step] = cls
    return cls


def _ngram_thresholds(value: Any) -> Any:
    """YAML has no tuples: [[2, 0.2], [3, 0.18]] -> ((2, 0.2), (3, 0.18))."""
    if isinstance(value, list):
        return tuple(tuple(v) if isinstance(v, list) else v for v in value)
    return value


@register
class LanguageStep(StepSpec):
    """Keep documents whose most likely language (py3langid, normalised probability) is one of
    `languages` with a probability of at least `min_score`."""

    step: ClassVar[str] = "language"
    kind: ClassVar[str] = "filter"
    languages: list[str] = Field(default_factory=lambda: ["en"], min_length=1)
    min_score: float = Field(0.65, ge=0, le=1)

    @field_validator("languages")
    @classmethod
    def _codes(cls, value: list[str]) -> list[str]:
        bad = [c for c in value if not _LANGUAGE_CODE.match(c)]
        if bad:
            raise ValueError(f"{bad[0]!r} is not an ISO 639 code like 'en'")
        return value


@register
class GopherQualityStep(StepSpec):
    step: ClassVar[str] = "gopher_quality"
    kind: ClassVar[str] = "filter"
    min_doc_words: int | None = Field(50, ge=0)
    max_doc_words: int | None = Field(100000, ge=0)
    min_avg_word_length: float | None = Field(3, ge=0)
    max_avg_word_length: float | None = Field(10, ge=0)
    max_symbol_word_ratio: float | None = Field(0.1, ge=0)
    max_bullet_lines_ratio: float | None = Field(0.9, ge=0, le=1)
    max_ellipsis_lines_ratio: float | None = Field(0.3, ge=0, le=1)
    max_non_alpha_words_ratio: float | None = Field(0.8, ge=0, le=1)
    min_stop_words: int | None = Field(2, ge=0)
    stop_words: list[str] | None = None


@register
class GopherRepetitionStep(StepSpec):
    step: ClassVar[str] = "gopher_repetition"
    kind: ClassVar[str] = "filter"
    dup_line_frac: float | None = Field(0.3, ge=0, le=1)
    dup_para_frac: float | None = Field(0.3, ge=0, le=1)
    dup_line_char_frac: float | None = Field(0.2, ge=0, le=1)
    dup_para_char_frac: float | None = Field(0.2, ge=0, le=1)
    top_n_grams: tuple[tuple[int, float], ...] = ((2, 0.2), (3, 0.18), (4, 0.16))
    dup_n_grams: tuple[tuple[int, float], ...] = (
        (5, 0.15), (6, 0.14), (7, 0.13), (8, 0.12), (9, 0.11), (10, 0.10))

    @field_validator("top_n_grams", "dup_n_grams", mode="before")
    @classmethod
    def _lists_to_tuples(cls, value: Any) -> Any:
        return _ngram_thresholds(value)


@register
class C4QualityStep(StepSpec):
    """C4's rules. On a kept document it also drops the lines that fail the line rules (no
    terminal punctuation, too few words, "javascript", policy boilerplate): the text changes."""

    step: ClassVar[str] = "c4_quality"
    kind: ClassVar[str] = "filter"
    split_paragraph: bool = True
    remove_citations: bool = True
    filter_no_terminal_punct: bool = True
    min_num_sentences: int = Field(5, ge=-1)  # -1: off
    min_words_per_line: int = Field(3, ge=-1)
    max_word_length: int = Field(1000, ge=-1)
    filter_lorem_ipsum: bool = True
    filter_javascript: bool = True
    filter_curly_bracket: bool = True
    filter_policy: bool = True


@register
class FineWebQualityStep(StepSpec):
    step: ClassVar[str] = "fineweb_quality"
    kind: ClassVar[str] = "filter"
    line_punct_thr: float = Field(0.12, ge=0, le=1)
    line_punct_exclude_zero: bool = False
    stop_chars: list[str] | None = None  # None: datatrove's terminal punctuation
    short_line_thr: float = Field(0.67, ge=0, le=1)
    short_line_length: int = Field(30, ge=0)
    char_duplicates_ratio: float = Field(0.01, ge=0, le=1)
    new_line_ratio: float = Field(0.3, ge=0)


@register
class ProfanityStep(StepSpec):
    """Remove documents whose alt-profanity-check probability (whole text) is >= threshold."""

    step: ClassVar[str] = "profanity"
    kind: ClassVar[str] = "filter"
    threshold: float = Field(0.5, gt=0, le=1)


@register
class LmPerplexityStep(StepSpec):
    """Keep documents whose perplexity under the reference LM (SmolLM2-135M, first
    `max_tokens` tokens) lies within [min_perplexity, max_perplexity]: very high is noise or
    another language, very low is boilerplate or repetition."""

    step: ClassVar[str] = "lm_perplexity"
    kind: ClassVar[str] = "filter"
    needs_lm: ClassVar[bool] = True
    min_perplexity: float = Field(0.0, ge=0)
    max_perplexity: float = Field(1000.0, gt=0)
    max_tokens: int = Field(256, ge=8, le=2048)


@register
class LlmDetectStep(StepSpec):
    """Remove documents the zero-shot detector flags as machine-written: log-perplexity minus
    mean entropy under the reference LM below `threshold`. Calibrate the threshold on human text
    for the false-positive rate you accept (`workers.curation.detect.calibrate`; about -0.03
    at 5% on the bench's human passages)."""

    step: ClassVar[str] = "llm_detect"
    kind: ClassVar[str] = "filter"
    needs_lm: ClassVar[bool] = True
    threshold: float
    max_tokens: int = Field(256, ge=8, le=2048)


@register
class ExactDedupStep(StepSpec):
    """Keep one document per normalised text (dedup.exact_keys): the smallest id."""

    step: ClassVar[str] = "exact_dedup"
    kind: ClassVar[str] = "dedup"


@register
class MinhashDedupStep(StepSpec):
    """Keep one document per near-duplicate cluster (estimated Jaccard of word shingles >=
    threshold): the smallest id."""

    step: ClassVar[str] = "minhash_dedup"
    kind: ClassVar[str] = "dedup"
    threshold: float = Field(0.8, gt=0, le=1)
    num_perm: int = Field(128, ge=16, le=1024)
    shingle: int = Field(5, ge=1, le=32)
    seed: int = Field(1, ge=0)


# shared.models.registry's name rule, for the name and the version.
_MODEL_REF = re.compile(r"^[a-z0-9][a-z0-9._-]{0,100}(@[a-z0-9][a-z0-9._-]{0,100})?$")


def _model_ref(value: str) -> str:
    if not _MODEL_REF.match(value):
        raise ValueError(f"{value!r} is not a registry model like 'name' or 'name@version'")
    return value


@register
class ColorFilterStep(StepSpec):
    """CoLoR-Filter (Brandfonbrener et al., 2024): score each document by its mean token NLL
    under `prior_model` minus under `conditional_model` (the prior fine-tuned on a sample of the
    target domain; `SubmitFineTune` makes one), both over the first `max_tokens` tokens; higher
    means the target sample taught the model more about this document. Keep the top
    `keep_fraction` of the whole corpus (every shard's scores meet in the global stage), or
    every document scoring at least `threshold`; give exactly one. A model is a registry name
    (its serving version) or `name@version`."""

    step: ClassVar[str] = "color_filter"
    kind: ClassVar[str] = "select"
    conditional_model: str
    prior_model: str = "smollm2-135m-instruct"  # workers.textgen.export.MODEL_NAME
    keep_fraction: float | None = Field(None, gt=0, le=1)
    threshold: float | None = None
    max_tokens: int = Field(256, ge=8, le=2048)

    @field_validator("conditional_model", "prior_model")
    @classmethod
    def _models(cls, value: str) -> str:
        return _model_ref(value)

    @model_validator(mode="after")
    def _one_cut(self) -> ColorFilterStep:
        if (self.keep_fraction is None) == (self.threshold is None):
            raise ValueError("give exactly one of keep_fraction and threshold")
        return self


class _EmbeddingStep(StepSpec):
    """Steps over all-MiniLM-L6-v2 sentence embeddings (the registry's `all-minilm-l6-v2`,
    ONNX) of each document's first `max_chars` characters, computed per shard."""

    max_chars: int = Field(2000, ge=1, le=100_000)
    batch_size: int = Field(32, ge=1, le=512)


@register
class EmbedDedupStep(_EmbeddingStep):
    """Keep one document per cluster of near-duplicates by meaning: documents whose
    all-MiniLM-L6-v2 embeddings (first `max_chars` characters) have cosine similarity >=
    threshold join, transitively; the smallest id is kept. Every pair across all shards is
    compared (embed_dedup.py): meant for up to ~100k documents a run."""

    step: ClassVar[str] = "embed_dedup"
    kind: ClassVar[str] = "dedup"
    threshold: float = Field(0.9, gt=0, le=1)


@register
class DomainClusterStep(_EmbeddingStep):
    """Label every remaining document with a topic: spherical k-means (k-means++ seeds from
    `seed`) over the all-MiniLM-L6-v2 embeddings (first `max_chars` characters) of all shards'
    documents. Each kept document gets metadata `cluster` (0..k-1) and `cluster_similarity`
    (cosine to its centroid); the report lists the cluster sizes. Removes nothing."""

    step: ClassVar[str] = "domain_cluster"
    kind: ClassVar[str] = "annotate"
    k: int = Field(8, ge=2, le=256)
    iterations: int = Field(20, ge=1, le=100)
    seed: int = Field(0, ge=0)


# workers.curation.loghub.SYSTEMS' names (a unit test keeps them equal).
LogSystem = Literal["HDFS", "Hadoop", "BGL", "HPC", "Thunderbird", "Windows", "Linux",
                    "Android", "HealthApp", "Proxifier", "OpenStack", "Mac"]


@register
class DrainTemplatesStep(StepSpec):
    """Log datasets, one record per document: Drain (drain3) mines each record's template in
    one pass over all shards, so templates agree across shards; every kept document gets
    metadata `template`, `template_id` and `parameters`, and the report lists the templates with
    their counts. `system` applies a Loghub system's settings (header format: only the message is
    mined; masks, similarity, depth); `similarity`, `depth` and `masks` (regexes replaced by
    `<*>`) override them. With `dedup_by_template`, the first `keep_per_template` records of each
    template are kept and the rest removed."""

    step: ClassVar[str] = "drain_templates"
    kind: ClassVar[str] = "dedup"
    system: LogSystem | None = None
    strip_header: bool = True
    similarity: float | None = Field(None, ge=0, le=1)
    depth: int | None = Field(None, ge=3, le=16)
    masks: list[str] | None = None
    dedup_by_template: bool = False
    keep_per_template: int = Field(1, ge=1)

    @field_validator("masks")
    @classmethod
    def _regexes(cls, value: list[str] | None) -> list[str] | None:
        for n, mask in enumerate(value or []):
            try:
                re.compile(mask)
            except re.error as exc:
                raise ValueError(f"masks[{n}] {mask!r} is not a regex: {exc}") from None
        return value


def _path(prefix: str, loc: tuple) -> str:
    out = prefix
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else f".{part}"
    return out


def _problem(err: dict, cls: type[StepSpec]) -> str:
    if err["type"] == "extra_forbidden":
        known = ", ".join(cls.model_fields) or "no parameters"
        return f"unknown parameter of {cls.step}; it takes: {known}"
    return err["msg"].removeprefix("Value error, ")


def parse_pipeline(spec: list[dict]) -> list[StepSpec]:
    """Typed steps from the user's list of `{step: NAME, ...params}`; PipelineError naming
    every bad entry otherwise."""
    if not isinstance(spec, list):
        raise PipelineError("pipeline", "must be a list of steps")
    if not spec:
        raise PipelineError("pipeline", "has no steps")
    steps: list[StepSpec] = []
    violations: list[tuple[str, str]] = []
    for i, entry in enumerate(spec):
        where = f"pipeline[{i}]"
        if not isinstance(entry, dict):
            violations.append((where, "must be a mapping like {step: language}"))
            continue
        name = entry.get("step")
        if name not in STEP_TYPES:
            problem = ("is missing" if name is None else
                       f"unknown step {name!r}; known: {', '.join(STEP_TYPES)}")
            violations.append((f"{where}.step", problem))
            continue
        cls = STEP_TYPES[name]
        try:
            steps.append(cls.model_validate({k: v for k, v in entry.items() if k != "step"}))
        except ValidationError as exc:
            violations += [(_path(where, err["loc"]), _problem(err, cls))
                           for err in exc.errors()]
    if violations:
        raise PipelineError(*violations[0], violations=violations)
    return steps
