"""Data sources: how curation spend turns into a pool of unique curated documents.

Every source kind offers candidate documents as one deterministic stream (candidate ``i``
is the same whatever is bought) and judges batches of them: what each cost and whether
curation keeps it. Spending ``c`` buys the stream up to the last candidate whose running
cost stays within ``c``, so the pool bought by a larger spend always contains the pool of
a smaller one, in the same order (nested pools). Judging runs as a Ray Data job on an
actor pool (see `anneal.curation`); offering runs on the driver and should be cheap.

A new kind is a few lines: a subclass of `SourceKind` with a ``Params`` spec model (a
`annealscale.core.spec_model.SpecModel`: frozen, unknown fields rejected, field docstrings
in ``annealscale schema``), an ``offers`` and a ``judge`` method, registered with
`register_source_kind`::

    class ShoutParams(SpecModel):
        path: str
        usd_per_doc: float

    @register_source_kind("shout")
    class Shout(SourceKind):
        Params = ShoutParams

        def offers(self, start, stop):
            return {"text": self.read_input(self.params.path)[start:stop]}

        def judge(self, batch):
            n = len(batch["text"])
            return {"text": [t.upper() for t in batch["text"]], "cost_usd": [self.params.usd_per_doc] * n}

Curation steps (`CurationStep`, registered with `register_curation_step`) compose with
any kind: listed under a source's ``steps``, they judge the kept candidates after the kind
(``dedup``: MinHash near-duplicate removal) and add their own cost.
"""

from __future__ import annotations

import abc
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
from pydantic import Field, model_validator

from annealscale.anneal.documents import ReadReport, read_texts
from annealscale.core.errors import check
from annealscale.core.hashing import content_hash, to_plain
from annealscale.core.spec_model import SpecModel, from_mapping

SOURCE_KINDS: dict[str, type[SourceKind]] = {}
STEP_KINDS: dict[str, type[CurationStep]] = {}


def register_source_kind(name: str) -> Callable[[type[SourceKind]], type[SourceKind]]:
    """Class decorator that makes a `SourceKind` available as ``kind: name`` in specs."""

    def wrap(cls: type[SourceKind]) -> type[SourceKind]:
        _check_params(cls, name)
        cls.kind = name
        SOURCE_KINDS[name] = cls
        return cls

    return wrap


def register_curation_step(name: str) -> Callable[[type[CurationStep]], type[CurationStep]]:
    """Class decorator that makes a `CurationStep` available as ``steps: [{kind: name}]``."""

    def wrap(cls: type[CurationStep]) -> type[CurationStep]:
        _check_params(cls, name)
        cls.kind = name
        STEP_KINDS[name] = cls
        return cls

    return wrap


def _check_params(cls: type, name: str) -> None:
    params = getattr(cls, "Params", None)
    if not (isinstance(params, type) and issubclass(params, SpecModel)):
        raise TypeError(
            f"{cls.__name__} (kind '{name}'): Params must be a SpecModel subclass "
            "(annealscale.core.spec_model), so its fields are validated and documented"
        )


def _with_params(model: type[SpecModel], registry: Mapping[str, type], what: str, data: Any) -> Any:
    """``data`` with ``params`` validated against the registered kind's ``Params`` model."""
    if (
        not isinstance(data, Mapping)
        or "kind" not in data
        or any(key not in model.model_fields for key in data)
    ):
        return data  # the base model reports what is missing, misspelled or malformed
    kind = data["kind"]
    check(
        isinstance(kind, str) and kind in registry,
        "kind",
        f"unknown {what} {kind!r}; known kinds: {', '.join(sorted(registry))}",
    )
    params = from_mapping(registry[kind].Params, data.get("params", {}), "params")
    return {**data, "params": params}


class StepSpec(SpecModel):
    """One curation step applied after a source's own judgement."""

    kind: str
    """A registered step: ``dedup`` or a plugin's."""
    params: Any = Field(default_factory=dict, json_schema_extra={"type": "object"})
    """Step-specific settings, validated against the step's ``Params`` model."""

    @model_validator(mode="before")
    @classmethod
    def _params(cls, data: Any) -> Any:
        return _with_params(cls, STEP_KINDS, "curation step", data)


class CurationResources(SpecModel):
    """Where curation runs; not part of any identity (it changes speed, not documents)."""

    actors: int | None = None
    """Ray Data actor-pool size; by default the cluster's CPUs (GPUs with
    ``gpus_per_actor``) divided by the per-actor share, at most 8."""
    cpus_per_actor: float = 1.0
    """CPUs per actor (fractions allowed)."""
    gpus_per_actor: float = 0.0
    """GPUs per actor; above 0 the classifier or generator runs on CUDA."""
    batch_size: int = 256
    """Candidates per ``map_batches`` batch (also the generation batch)."""

    def validate_spec(self) -> None:
        check(self.actors is None or self.actors >= 1, "actors", "must be at least 1")
        check(self.cpus_per_actor > 0, "cpus_per_actor", "must be positive")
        check(self.gpus_per_actor >= 0, "gpus_per_actor", "must not be negative")
        check(self.batch_size >= 1, "batch_size", "must be at least 1")


class SourceSpec(SpecModel):
    """One candidate data source as written in the spec."""

    name: str
    """Unique name used in results and reports."""
    kind: str
    """A registered source kind: as_is, classifier_filter, synthetic, or a plugin's."""
    params: Any = Field(default_factory=dict, json_schema_extra={"type": "object"})
    """Kind-specific settings, validated against the kind's ``Params`` model."""
    steps: tuple[StepSpec, ...] = ()
    """Curation steps after the kind's judgement, in order (e.g. ``dedup``)."""
    curation_spend: tuple[float, ...] | None = None
    """Spends (USD) for this source; the grid's spends when absent."""
    resources: CurationResources = Field(default_factory=CurationResources)
    """Where this source's curation runs (actors, CPUs/GPUs per actor, batch size)."""

    @model_validator(mode="before")
    @classmethod
    def _params(cls, data: Any) -> Any:
        return _with_params(cls, SOURCE_KINDS, "source kind", data)

    def validate_spec(self) -> None:
        check(bool(self.name.strip()), "name", "must not be empty")
        if self.curation_spend is not None:
            check(len(self.curation_spend) > 0, "curation_spend", "must list at least one spend")
            check(
                all(c > 0 for c in self.curation_spend),
                "curation_spend",
                "every spend must be positive (USD)",
            )

    @property
    def identity(self) -> str:
        """Hash of what determines the documents bought: kind, params and steps; not the
        name or the resources."""
        plain = {"kind": self.kind, "params": to_plain(self.params)}
        if self.steps:
            plain["steps"] = [{"kind": s.kind, "params": to_plain(s.params)} for s in self.steps]
        return content_hash(plain)


def _same_path(path: str) -> str:
    return path


@dataclass(frozen=True, kw_only=True)
class CurationContext:
    """Runtime objects curation needs, passed explicitly."""

    tokenizer: Any
    """Counts tokens, the unit pools and per-token prices are measured in."""
    resolve: Callable[[str], str] = _same_path
    """Maps spec paths (such as ``demo:math_train``) to files."""
    cache_dir: Path = Path(".")
    min_round: int = 256
    """Fewest candidates a curation round judges when costs are only known afterwards."""


@dataclass(frozen=True)
class Setup:
    """What a kind prepares once per source before judging (e.g. a trained classifier)."""

    usd: float = 0.0
    flops: float = 0.0
    state: Any = None
    """Handed to `SourceKind.open` in every actor; must pickle."""


class SourceKind(abc.ABC):
    """A way of acquiring domain documents; see the module docstring for the contract.

    ``offers`` and ``setup`` run on the driver; ``open`` and ``judge`` run in Ray Data
    actors (``self.device`` is ``cuda`` or ``cpu`` there).
    """

    kind: ClassVar[str]
    Params: ClassVar[type]

    def __init__(self, params: Any, ctx: CurationContext):
        self.params = params
        self.ctx = ctx
        self.device = "cpu"
        self.report = ReadReport()
        self._inputs: dict[tuple[str, str], list[str]] = {}

    def setup(self) -> Setup:
        """One-off work paid before any candidate; its cost is part of every pool."""
        return Setup()

    def price_per_candidate(self) -> float | None:
        """USD per candidate when known before judging it (a fixed price per document
        scored); None when judging reveals it (per-token prices)."""
        return None

    @abc.abstractmethod
    def offers(self, start: int, stop: int) -> dict[str, list]:
        """Candidates ``start`` to ``stop - 1`` of the fixed purchase order as columns;
        fewer rows only at the end of the stream."""

    def open(self, state: Any) -> None:
        """Load what judging needs (a model onto ``self.device``), once per actor."""
        return None

    @abc.abstractmethod
    def judge(self, batch: dict[str, list]) -> dict[str, Any]:
        """Columns for the offered ``batch``: ``text`` and ``cost_usd`` (USD) per
        candidate, optionally ``flops``, ``kept`` (default true), ``score``, ``tokens``."""

    def read_input(self, path: str, text_field: str = "text") -> list[str]:
        """Texts of an input path (resolved, read once, skips recorded in ``report``)."""
        key = (path, text_field)
        if key not in self._inputs:
            self._inputs[key] = read_texts(self.ctx.resolve(path), text_field, self.report)
        return self._inputs[key]

    def count_tokens(self, texts: list[str]) -> list[int]:
        """Base-tokenizer tokens of each text (no special tokens)."""
        return count_tokens(self.ctx.tokenizer, texts)


def token_counter(tokenizer: Any) -> Any:
    """What actors count tokens with: the Rust ``tokenizers.Tokenizer`` behind a fast
    Hugging Face tokenizer (it pickles small and loads without importing
    ``transformers``, seconds per actor), else the tokenizer itself."""
    return getattr(tokenizer, "backend_tokenizer", tokenizer)


def count_tokens(tokenizer: Any, texts: list[str]) -> list[int]:
    if not texts:
        return []
    if hasattr(tokenizer, "encode_batch"):  # a tokenizers.Tokenizer
        return [len(e.ids) for e in tokenizer.encode_batch(list(texts), add_special_tokens=False)]
    return [len(x) for x in tokenizer(list(texts), add_special_tokens=False)["input_ids"]]


class CurationStep(abc.ABC):
    """A step applied to the candidates a kind keeps. ``judge`` runs in the actors on each
    batch and may add columns, cost and FLOPs, or drop candidates (``kept``); ``sequential``
    runs on the driver over each round in stream order, with the rows of earlier rounds as
    ``history``, for decisions that depend on what came before (deduplication)."""

    kind: ClassVar[str]
    Params: ClassVar[type]
    charges_usd: bool = False
    """True when the step adds USD per candidate (then costs are known only after judging)."""

    def __init__(self, params: Any, column: str):
        self.params = params
        self.column = column
        """Prefix for the columns this step adds (unique per position in ``steps``)."""

    def open(self) -> None:
        """Per-actor initialisation."""
        return None

    @abc.abstractmethod
    def judge(self, columns: dict[str, Any]) -> None:
        """Update the batch ``columns`` (numpy arrays) in place."""

    def sequential(self, rows, history) -> Any:
        """Return ``rows`` (a pyarrow Table) with ordered decisions applied."""
        return rows


# --- as_is -------------------------------------------------------------------------------


class AsIsParams(SpecModel):
    path: str
    """Documents sold as they are (see `annealscale.anneal.documents`; ``demo:NAME`` for the demo)."""
    usd_per_token: float
    """Price per token bought (USD)."""
    text_field: str = "text"
    """Column (Parquet, CSV) or key (JSONL) holding the text."""

    def validate_spec(self) -> None:
        check(self.usd_per_token > 0, "usd_per_token", "must be positive (USD per token)")


@register_source_kind("as_is")
class AsIs(SourceKind):
    """A licensed corpus priced per token; spend buys a longer prefix of it."""

    Params = AsIsParams

    def offers(self, start: int, stop: int) -> dict[str, list]:
        return {"text": self.read_input(self.params.path, self.params.text_field)[start:stop]}

    def judge(self, batch: dict[str, list]) -> dict[str, Any]:
        tokens = self.count_tokens(batch["text"])
        cost = [n * self.params.usd_per_token for n in tokens]
        return {"text": batch["text"], "cost_usd": cost, "tokens": tokens}


# --- classifier_filter -------------------------------------------------------------------


class ClassifierFilterParams(SpecModel):
    raw_path: str
    """The raw pool the classifier scores (a web crawl)."""
    usd_per_doc_scored: float
    """Price of scoring one raw document (USD): fetching, cleaning and classifying it."""
    positives_path: str | None = None
    """Seed documents of the domain (positive examples) for the hashed n-gram classifier."""
    negatives_path: str | None = None
    """Seed documents outside the domain (negative examples)."""
    positives: tuple[str, ...] = ()
    """Positive seed examples written in the spec (added to ``positives_path``'s)."""
    negatives: tuple[str, ...] = ()
    """Negative seed examples written in the spec."""
    model_path: str | None = None
    """A Hugging Face sequence-classification checkpoint to score with instead of seeds."""
    positive_label: int = 1
    """Output label of ``model_path`` whose probability is the domain score."""
    max_length: int = 512
    """Tokens of each document the checkpoint reads (truncation)."""
    threshold: float | None = None
    """Keep documents whose domain probability is at least this (0.5 unless
    ``top_fraction`` is given)."""
    top_fraction: float | None = None
    """Keep about this fraction of the crawl: the threshold becomes the score quantile over
    the first ``calibration_docs`` raw documents, so every spend uses the same threshold
    and pools stay nested. Calibration scoring is paid for once, at setup."""
    calibration_docs: int = 1000
    """Raw documents scored once to set the ``top_fraction`` threshold (documents)."""
    n_features: int = 2**18
    """Hashed word 1-2 gram features."""
    text_field: str = "text"
    """Column (Parquet, CSV) or key (JSONL) holding the text of every input."""

    def validate_spec(self) -> None:
        check(self.usd_per_doc_scored > 0, "usd_per_doc_scored", "must be positive (USD)")
        seeds = bool(self.positives_path or self.positives) and bool(
            self.negatives_path or self.negatives
        )
        check(
            (self.model_path is None) == seeds,
            "model_path",
            "give either a classifier checkpoint (model_path) or positive and negative seeds "
            "(positives_path/positives and negatives_path/negatives), not both",
        )
        check(
            self.threshold is None or self.top_fraction is None,
            "threshold",
            "give threshold or top_fraction, not both",
        )
        if self.threshold is not None:
            check(0.0 < self.threshold < 1.0, "threshold", "must be a probability in (0, 1)")
        if self.top_fraction is not None:
            check(0.0 < self.top_fraction <= 1.0, "top_fraction", "must be in (0, 1]")
        check(self.calibration_docs >= 1, "calibration_docs", "must be at least 1")
        check(self.max_length >= 1, "max_length", "must be at least 1 token")


@register_source_kind("classifier_filter")
class ClassifierFilter(SourceKind):
    """Score raw documents with a quality classifier; spend buys more scoring."""

    Params = ClassifierFilterParams

    def price_per_candidate(self) -> float | None:
        return self.params.usd_per_doc_scored

    def setup(self) -> Setup:
        from annealscale.anneal.classifiers import HashedNgramClassifier

        p = self.params
        if p.model_path is not None:
            state = {"kind": "hf", "model_path": self.ctx.resolve(p.model_path)}
            flops = 0.0
        else:
            pos = list(p.positives) + (
                self.read_input(p.positives_path, p.text_field) if p.positives_path else []
            )
            neg = list(p.negatives) + (
                self.read_input(p.negatives_path, p.text_field) if p.negatives_path else []
            )
            classifier = HashedNgramClassifier(n_features=p.n_features).fit(pos, neg)
            state = {"kind": "hashed", "classifier": classifier}
            flops = classifier.train_flops_
        usd = 0.0
        if p.top_fraction is None:
            state["threshold"] = 0.5 if p.threshold is None else p.threshold
        else:
            sample = self.read_input(p.raw_path, p.text_field)[: p.calibration_docs]
            self.open(state)
            scores, sample_flops = self._score(sample)
            state["threshold"] = float(np.quantile(scores, 1.0 - p.top_fraction))
            usd = len(sample) * p.usd_per_doc_scored
            flops += float(np.sum(sample_flops))
        return Setup(usd=usd, flops=flops, state=state)

    def offers(self, start: int, stop: int) -> dict[str, list]:
        return {"text": self.read_input(self.params.raw_path, self.params.text_field)[start:stop]}

    def open(self, state: Any) -> None:
        from annealscale.anneal.classifiers import HfSequenceClassifier

        self._threshold = state.get("threshold")
        if state["kind"] == "hf":
            self._scorer = HfSequenceClassifier(
                state["model_path"],
                device=self.device,
                positive_label=self.params.positive_label,
                max_length=self.params.max_length,
            )
        else:
            self._scorer = state["classifier"]

    def _score(self, texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
        return self._scorer.score(texts)

    def judge(self, batch: dict[str, list]) -> dict[str, Any]:
        texts = batch["text"]
        scores, flops = self._score(texts)
        return {
            "text": texts,
            "cost_usd": [self.params.usd_per_doc_scored] * len(texts),
            "flops": flops,
            "score": scores,
            "kept": scores >= self._threshold,
        }


# --- synthetic ---------------------------------------------------------------------------

GENERATORS = ("math_worked_examples", "ngram_lm", "hf_causal_lm")


class SyntheticParams(SpecModel):
    generator: str = "math_worked_examples"
    """``math_worked_examples`` (templated problems with worked solutions), ``ngram_lm``
    (a word n-gram model fitted on ``seed_path``: the offline stand-in for an LLM), or
    ``hf_causal_lm`` (a Hugging Face causal LM at ``model_path`` continuing prompts)."""
    usd_per_token: float
    """Price per generated token (USD): base-tokenizer tokens of the text for the
    programmatic generators, the model's new tokens for ``hf_causal_lm``."""
    seed_path: str | None = None
    """Seed documents: imitated by ``ngram_lm``; their openings prompt ``hf_causal_lm``."""
    order: int = 3
    """N-gram order of ``ngram_lm``."""
    worked_examples_fraction: float = 0.0
    """With ``ngram_lm``: share of documents that are templated worked examples instead."""
    seed: int = 0
    """Document ``i`` depends only on (seed, i), so larger spends extend the sequence."""
    text_field: str = "text"
    """Column (Parquet, CSV) or key (JSONL) holding the text of every input."""
    model_path: str | None = None
    """``hf_causal_lm``: a ``save_pretrained`` directory or hub id."""
    prompts: tuple[str, ...] = ()
    """``hf_causal_lm``: prompts, used in turn (document ``i`` gets prompt ``i mod n``)."""
    prompt_chars: int = 200
    """``hf_causal_lm`` with ``seed_path``: characters of each seed document used as prompt."""
    max_new_tokens: int = 128
    """``hf_causal_lm``: tokens generated per document (at most)."""
    temperature: float = 1.0
    """``hf_causal_lm``: sampling temperature (1 samples the model as it is)."""
    top_k: int = 0
    """Sample among the k most likely tokens (0: all)."""
    top_p: float = 1.0
    """Nucleus sampling mass (1: all)."""
    do_sample: bool = True
    """False: greedy decoding."""
    keep_prompt: bool = False
    """``hf_causal_lm``: the document is prompt plus continuation instead of the
    continuation alone."""

    def validate_spec(self) -> None:
        check(self.usd_per_token > 0, "usd_per_token", "must be positive (USD per token)")
        check(
            self.generator in GENERATORS,
            "generator",
            f"unknown generator '{self.generator}'; available: {', '.join(GENERATORS)}",
        )
        if self.generator == "ngram_lm":
            check(self.seed_path is not None, "seed_path", "ngram_lm needs seed documents")
            check(2 <= self.order <= 6, "order", f"must be 2 to 6, got {self.order}")
        if self.generator == "hf_causal_lm":
            check(self.model_path is not None, "model_path", "hf_causal_lm needs a model")
            check(
                bool(self.prompts) or self.seed_path is not None,
                "prompts",
                "hf_causal_lm needs prompts or seed_path",
            )
        check(self.max_new_tokens >= 1, "max_new_tokens", "must be at least 1")
        check(self.temperature > 0, "temperature", "must be positive")
        check(self.top_k >= 0, "top_k", "must not be negative (0 disables)")
        check(0 < self.top_p <= 1, "top_p", "must be in (0, 1]")
        check(
            0.0 <= self.worked_examples_fraction <= 1.0,
            "worked_examples_fraction",
            "must be a fraction in [0, 1]",
        )


@register_source_kind("synthetic")
class Synthetic(SourceKind):
    """Generated documents; spend buys generated tokens. The stream never ends."""

    Params = SyntheticParams

    def setup(self) -> Setup:
        from annealscale.anneal.ngram_generator import fit_ngram

        p = self.params
        if p.generator == "ngram_lm":
            model = fit_ngram(self.read_input(p.seed_path, p.text_field), p.order)
            return Setup(state={"ngram": model})
        if p.generator == "hf_causal_lm":
            prompts = list(p.prompts)
            if p.seed_path is not None:
                seeds = self.read_input(p.seed_path, p.text_field)
                prompts += [s[: p.prompt_chars] for s in seeds]
            return Setup(state={"model_path": self.ctx.resolve(p.model_path), "prompts": prompts})
        return Setup(state={})

    def offers(self, start: int, stop: int) -> dict[str, list]:
        return {"index": list(range(start, stop))}

    def open(self, state: Any) -> None:
        self._state = state
        if self.params.generator == "hf_causal_lm":
            from annealscale.anneal.generators import HfGenerator

            self._hf = HfGenerator(state["model_path"], device=self.device)

    def judge(self, batch: dict[str, list]) -> dict[str, Any]:
        from annealscale.anneal.generators import programmatic_document

        p = self.params
        if p.generator != "hf_causal_lm":
            texts = [programmatic_document(p, self._state, i) for i in batch["index"]]
            tokens = self.count_tokens(texts)
            return {
                "text": texts,
                "cost_usd": [n * p.usd_per_token for n in tokens],
                "tokens": tokens,
            }
        prompts = self._state["prompts"]
        out = self._hf.generate(
            [prompts[i % len(prompts)] for i in batch["index"]],
            seeds=[(p.seed, i) for i in batch["index"]],
            max_new_tokens=p.max_new_tokens,
            temperature=p.temperature,
            top_k=p.top_k,
            top_p=p.top_p,
            do_sample=p.do_sample,
            keep_prompt=p.keep_prompt,
        )
        return {
            "text": out.texts,
            "cost_usd": [n * p.usd_per_token for n in out.new_tokens],
            "flops": out.flops,
        }


# --- dedup -------------------------------------------------------------------------------


class DedupParams(SpecModel):
    threshold: float = 0.8
    """Estimated Jaccard similarity of word shingles at which a document duplicates an
    earlier kept one."""
    num_perm: int = 128
    """MinHash functions per signature."""
    shingle: int = 5
    """Words per shingle."""
    seed: int = 0
    """Seed of the MinHash permutations (part of the pool's identity)."""
    usd_per_doc: float = 0.0
    """Price of hashing one document (USD); its compute is always in the ledger."""

    def validate_spec(self) -> None:
        check(0.0 < self.threshold <= 1.0, "threshold", "must be in (0, 1]")
        check(8 <= self.num_perm <= 1024, "num_perm", "must be 8 to 1024")
        check(self.shingle >= 1, "shingle", "must be at least 1 word")
        check(self.usd_per_doc >= 0, "usd_per_doc", "must not be negative (USD)")


@register_curation_step("dedup")
class Dedup(CurationStep):
    """MinHash near-duplicate removal: a kept document is dropped when it nearly
    duplicates an earlier kept document of the same stream. Decisions look only
    backwards, so deduplicated pools stay nested."""

    Params = DedupParams

    @property
    def charges_usd(self) -> bool:  # type: ignore[override]
        return self.params.usd_per_doc > 0

    def open(self) -> None:
        from annealscale.anneal.minhash import permutations

        self._a, self._b = permutations(self.params.num_perm, self.params.seed)

    def judge(self, columns: dict[str, Any]) -> None:
        from annealscale.anneal.minhash import shingle_hashes, signature, signature_flops

        p = self.params
        n = len(columns["text"])
        sigs = np.zeros((n, p.num_perm), dtype=np.uint32)
        for i in np.flatnonzero(columns["kept"]):
            text = columns["text"][i]
            sigs[i] = signature(text, self._a, self._b, p.shingle)
            shingles = max(1, len(shingle_hashes(text, p.shingle)))
            columns["flops"][i] += signature_flops(shingles, p.num_perm)
            columns["cost_usd"][i] += p.usd_per_doc
        columns[f"{self.column}_minhash"] = sigs

    def sequential(self, rows, history):
        import pyarrow as pa

        from annealscale.anneal.minhash import LshIndex, choose_bands

        p = self.params
        bands, per_band = choose_bands(p.num_perm, p.threshold)
        index = LshIndex(bands, per_band, p.threshold)
        sig_name, kept_name = f"{self.column}_minhash", f"{self.column}_kept"
        kept_offsets: list[int] = []  # stream offset of each document in the index
        if history is not None and history.num_rows:
            passed = history.column(kept_name).to_numpy(zero_copy_only=False)
            sigs = _signatures(history.column(sig_name), p.num_perm)
            offsets = history.column("_offset").to_numpy()
            for i in np.flatnonzero(passed):
                index.add(sigs[i])
                kept_offsets.append(int(offsets[i]))
        kept = rows.column("kept").to_numpy(zero_copy_only=False).copy()
        sigs = _signatures(rows.column(sig_name), p.num_perm)
        offsets = rows.column("_offset").to_numpy()
        duplicate_of = np.full(len(kept), -1, dtype=np.int64)
        for i in np.flatnonzero(kept):
            j = index.duplicate_of(sigs[i])
            if j is None:
                index.add(sigs[i])
                kept_offsets.append(int(offsets[i]))
            else:
                kept[i] = False
                duplicate_of[i] = kept_offsets[j]
        rows = rows.set_column(rows.schema.get_field_index("kept"), "kept", pa.array(kept))
        rows = rows.append_column(kept_name, pa.array(kept))  # what later rounds index
        return rows.append_column(f"{self.column}_duplicate_of", pa.array(duplicate_of))


def _signatures(column, num_perm: int) -> np.ndarray:
    """A list<uint32> Arrow column as an ``(n, num_perm)`` array."""
    flat = column.combine_chunks().flatten().to_numpy(zero_copy_only=False)
    return flat.astype(np.uint32).reshape(-1, num_perm)


def curate(source: SourceSpec, spend: float, ctx: CurationContext, *, inputs: str = ""):
    """Buy ``spend`` USD of ``source`` (see `anneal.curation.curate`)."""
    from annealscale.anneal.curation import curate as run

    return run(source, spend, ctx, inputs=inputs)


__all__ = [
    "SOURCE_KINDS",
    "STEP_KINDS",
    "CurationContext",
    "CurationResources",
    "CurationStep",
    "Setup",
    "SourceKind",
    "SourceSpec",
    "StepSpec",
    "curate",
    "register_curation_step",
    "register_source_kind",
]
