"""Data sources: how curation spend turns into a pool of unique curated documents.

Every source kind presents its candidate documents as one deterministic stream, each
candidate with the cost of obtaining it and whether curation keeps it. Spending ``c``
walks the stream until the next candidate would overrun ``c``, so the pool bought by a
larger spend always contains the pool of a smaller one, in the same order (nested pools):
cells that differ in spend differ only in what the extra money bought.

A new kind is a subclass of `SourceKind` with a frozen ``Params`` dataclass, registered
with `register_source_kind`; the spec validates its ``params`` against that class.
"""

from __future__ import annotations

import abc
import json
import os
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import pyarrow as pa
import pyarrow.parquet as pq

from anneal.config import check, content_hash, from_mapping, to_plain
from anneal.documents import read_texts
from anneal.errors import AnnealscaleError
from anneal.ngram_generator import fit_ngram
from anneal.ngram_generator import generate as generate_ngram
from anneal.synthetic_math import generate_math_document

SOURCE_KINDS: dict[str, type[SourceKind]] = {}


def register_source_kind(name: str) -> Callable[[type[SourceKind]], type[SourceKind]]:
    """Class decorator that makes a `SourceKind` available as ``kind: name`` in specs."""

    def wrap(cls: type[SourceKind]) -> type[SourceKind]:
        cls.kind = name
        SOURCE_KINDS[name] = cls
        return cls

    return wrap


@dataclass(frozen=True, kw_only=True)
class SourceSpec:
    """One candidate data source as written in the spec."""

    name: str
    """Unique name used in results and reports."""
    kind: str
    """A registered source kind: as_is, classifier_filter, synthetic, or a plugin's."""
    params: Mapping[str, Any] = field(default_factory=dict)
    """Kind-specific settings, validated against the kind's ``Params`` class."""
    curation_spend: tuple[float, ...] | None = None
    """Spends (USD) for this source; the grid's spends when absent."""

    def __post_init__(self):
        check(bool(self.name.strip()), "name", "must not be empty")
        check(
            self.kind in SOURCE_KINDS,
            "kind",
            f"unknown source kind '{self.kind}'; known kinds: {', '.join(sorted(SOURCE_KINDS))}",
        )
        params_cls = SOURCE_KINDS[self.kind].Params
        raw = self.params if isinstance(self.params, params_cls) else dict(self.params)
        parsed = from_mapping(params_cls, raw, "params")
        object.__setattr__(self, "params", parsed)
        if self.curation_spend is not None:
            check(len(self.curation_spend) > 0, "curation_spend", "must list at least one spend")
            check(
                all(c > 0 for c in self.curation_spend),
                "curation_spend",
                "every spend must be positive (USD)",
            )

    @property
    def identity(self) -> str:
        """Hash of what determines the documents bought: kind and params, not the name."""
        return content_hash({"kind": self.kind, "params": to_plain(self.params)})


@dataclass(frozen=True)
class Candidate:
    """One document offered by a source, with what it costs to obtain and judge it."""

    text: str
    cost_usd: float
    flops: float
    kept: bool


@dataclass(frozen=True, kw_only=True)
class CurationContext:
    """Runtime objects curation needs, passed explicitly."""

    tokenizer: Any
    """Counts tokens, the unit sources are priced in."""
    resolve: Callable[[str], str] = lambda path: path
    """Maps spec paths (such as ``demo:math_train``) to files."""
    cache_dir: Path = Path(".")


class SourceKind(abc.ABC):
    """A way of acquiring domain documents; see the module docstring for the contract."""

    kind: ClassVar[str]
    Params: ClassVar[type]

    def __init__(self, params: Any, ctx: CurationContext):
        self.params = params
        self.ctx = ctx

    def setup_cost(self) -> tuple[float, float]:
        """One-off (USD, FLOPs) paid before any candidate, e.g. training a classifier."""
        return 0.0, 0.0

    @abc.abstractmethod
    def candidates(self) -> Iterator[Candidate]:
        """The source's documents in their fixed purchase order."""

    def n_tokens(self, texts: list[str]) -> list[int]:
        ids = self.ctx.tokenizer(texts, add_special_tokens=False)["input_ids"]
        return [len(x) for x in ids]


@dataclass(frozen=True, kw_only=True)
class AsIsParams:
    path: str
    """Documents sold as they are (Parquet/JSONL; ``demo:NAME`` for the demo corpus)."""
    usd_per_token: float
    """Price per token bought (USD)."""
    text_field: str = "text"

    def __post_init__(self):
        check(self.usd_per_token > 0, "usd_per_token", "must be positive (USD per token)")


@register_source_kind("as_is")
class AsIs(SourceKind):
    """A licensed corpus priced per token; spend buys a longer prefix of it."""

    Params = AsIsParams

    def candidates(self) -> Iterator[Candidate]:
        texts = read_texts(self.ctx.resolve(self.params.path), self.params.text_field)
        for start in range(0, len(texts), 256):
            chunk = texts[start : start + 256]
            for text, n in zip(chunk, self.n_tokens(chunk), strict=True):
                yield Candidate(text, n * self.params.usd_per_token, 0.0, True)


@dataclass(frozen=True, kw_only=True)
class ClassifierFilterParams:
    raw_path: str
    """The raw pool the classifier scores (a web crawl)."""
    positives_path: str
    """Seed documents of the domain (positive examples)."""
    negatives_path: str
    """Seed documents outside the domain (negative examples)."""
    usd_per_doc_scored: float
    """Price of scoring one raw document (USD): fetching, cleaning and classifying it."""
    threshold: float = 0.5
    """Keep documents whose domain probability is at least this."""
    n_features: int = 2**18
    """Hashed word 1-2 gram features."""
    text_field: str = "text"

    def __post_init__(self):
        check(self.usd_per_doc_scored > 0, "usd_per_doc_scored", "must be positive (USD)")
        check(0.0 < self.threshold < 1.0, "threshold", "must be a probability in (0, 1)")


@register_source_kind("classifier_filter")
class ClassifierFilter(SourceKind):
    """Score raw documents with a linear quality classifier; spend buys more scoring."""

    Params = ClassifierFilterParams

    def setup_cost(self) -> tuple[float, float]:
        self._fit()
        return 0.0, self._train_flops

    def _fit(self):
        if hasattr(self, "_model"):
            return
        from sklearn.feature_extraction.text import HashingVectorizer
        from sklearn.linear_model import LogisticRegression

        p = self.params
        pos = read_texts(self.ctx.resolve(p.positives_path), p.text_field)
        neg = read_texts(self.ctx.resolve(p.negatives_path), p.text_field)
        self._vectorizer = HashingVectorizer(
            n_features=p.n_features, ngram_range=(1, 2), alternate_sign=False, norm="l2"
        )
        x = self._vectorizer.transform(pos + neg)
        self._model = LogisticRegression(C=4.0, max_iter=1000).fit(
            x, [1] * len(pos) + [0] * len(neg)
        )
        # sparse dot products: 2 FLOPs per non-zero feature per L-BFGS iteration
        self._train_flops = 2.0 * x.nnz * float(self._model.n_iter_.max())

    def candidates(self) -> Iterator[Candidate]:
        self._fit()
        p = self.params
        texts = read_texts(self.ctx.resolve(p.raw_path), p.text_field)
        for start in range(0, len(texts), 256):
            chunk = texts[start : start + 256]
            x = self._vectorizer.transform(chunk)
            scores = self._model.predict_proba(x)[:, 1]
            nnz = x.getnnz(axis=1)
            for text, score, k in zip(chunk, scores, nnz, strict=True):
                yield Candidate(
                    text, p.usd_per_doc_scored, 2.0 * float(k), bool(score >= p.threshold)
                )


GENERATORS = ("math_worked_examples", "ngram_lm")


@dataclass(frozen=True, kw_only=True)
class SyntheticParams:
    generator: str = "math_worked_examples"
    """``math_worked_examples`` (templated problems with worked solutions) or ``ngram_lm``
    (a word n-gram model fitted on ``seed_path``: the offline stand-in for an LLM)."""
    usd_per_token: float
    """Price per generated token (USD)."""
    seed_path: str | None = None
    """Seed documents the ``ngram_lm`` generator imitates."""
    order: int = 3
    """N-gram order of ``ngram_lm``."""
    worked_examples_fraction: float = 0.0
    """With ``ngram_lm``: share of documents that are templated worked examples instead."""
    seed: int = 0
    text_field: str = "text"

    def __post_init__(self):
        check(self.usd_per_token > 0, "usd_per_token", "must be positive (USD per token)")
        check(
            self.generator in GENERATORS,
            "generator",
            f"unknown generator '{self.generator}'; available: {', '.join(GENERATORS)}",
        )
        if self.generator == "ngram_lm":
            check(self.seed_path is not None, "seed_path", "ngram_lm needs seed documents")
            check(2 <= self.order <= 6, "order", f"must be 2 to 6, got {self.order}")
        check(
            0.0 <= self.worked_examples_fraction <= 1.0,
            "worked_examples_fraction",
            "must be a fraction in [0, 1]",
        )


@register_source_kind("synthetic")
class Synthetic(SourceKind):
    """Generated documents; spend buys generated tokens. Document i depends only on
    (seed, i), so a larger spend extends the same sequence."""

    Params = SyntheticParams

    def candidates(self) -> Iterator[Candidate]:
        p = self.params
        document = self._generator()
        index = 0
        while True:
            chunk = [document(index + i) for i in range(256)]
            index += 256
            for text, n in zip(chunk, self.n_tokens(chunk), strict=True):
                if text:
                    yield Candidate(text, n * p.usd_per_token, 0.0, True)

    def _generator(self) -> Callable[[int], str]:
        p = self.params
        if p.generator == "math_worked_examples":
            return lambda i: generate_math_document(p.seed, i)
        model = fit_ngram(read_texts(self.ctx.resolve(p.seed_path), p.text_field), p.order)
        worked_every = round(1 / p.worked_examples_fraction) if p.worked_examples_fraction else 0

        def document(i: int) -> str:
            if worked_every and i % worked_every == 0:
                return generate_math_document(p.seed, i)
            return generate_ngram(model, p.seed, i)

        return document


@dataclass(frozen=True, kw_only=True)
class CuratedPool:
    """Documents bought for one (source, spend), with the measured cost ledger."""

    path: Path
    """Parquet file of the kept documents (column ``text``), in purchase order."""
    documents: int
    tokens: int
    """Tokens of the kept documents by the base tokenizer, EOS separators included."""
    candidates_processed: int
    cost_usd: float
    """Money actually spent (USD, at most the spend)."""
    flops: float
    """Modelled compute of curation (FLOPs)."""
    seconds: float
    """Measured CPU seconds of curation."""

    def ledger(self) -> dict[str, float]:
        return {
            "curation_cost": self.cost_usd,
            "curation_flops": self.flops,
            "curation_seconds": self.seconds,
            "curation_documents": self.documents,
            "curation_candidates": self.candidates_processed,
        }


def curate(
    source: SourceSpec, spend: float, ctx: CurationContext, *, inputs: str = ""
) -> CuratedPool:
    """Buy ``spend`` USD of ``source``; cached under the source identity, the identity of
    its input files (``inputs``) and the spend."""
    key = content_hash([source.identity, inputs])
    out_dir = Path(ctx.cache_dir) / "pools" / f"{source.kind}-{key}"
    stem = f"spend-{float(spend)!r}"  # exact: nearby spends must not share a pool
    meta_path = out_dir / f"{stem}.json"
    if meta_path.exists():
        meta = json.loads(meta_path.read_text())
        return CuratedPool(path=out_dir / f"{stem}.parquet", **meta)
    started = time.process_time()
    kind = SOURCE_KINDS[source.kind](source.params, ctx)
    setup_usd, setup_flops = kind.setup_cost()
    spent, flops, processed = setup_usd, setup_flops, 0
    kept: list[str] = []
    for candidate in kind.candidates():
        if spent + candidate.cost_usd > spend:
            break
        spent += candidate.cost_usd
        flops += candidate.flops
        processed += 1
        if candidate.kept:
            kept.append(candidate.text)
    if not kept:
        raise AnnealscaleError(
            f"source '{source.name}': spend {spend:g} USD keeps no documents "
            f"({processed} processed); raise the spend or loosen the filter"
        )
    tokens = sum(n + 1 for n in kind.n_tokens(kept))
    out_dir.mkdir(parents=True, exist_ok=True)
    unique = uuid.uuid4().hex
    tmp = out_dir / f".{stem}.{unique}.parquet.tmp"
    pq.write_table(pa.table({"text": kept}), tmp)
    os.replace(tmp, out_dir / f"{stem}.parquet")
    meta = {
        "documents": len(kept),
        "tokens": tokens,
        "candidates_processed": processed,
        "cost_usd": spent,
        "flops": flops,
        "seconds": time.process_time() - started,
    }
    tmp_meta = out_dir / f".{stem}.{unique}.json.tmp"
    tmp_meta.write_text(json.dumps(meta))
    os.replace(tmp_meta, meta_path)  # the marker appears only after the pool is complete
    return CuratedPool(path=out_dir / f"{stem}.parquet", **meta)


__all__ = [
    "SOURCE_KINDS",
    "Candidate",
    "CuratedPool",
    "CurationContext",
    "SourceKind",
    "SourceSpec",
    "curate",
    "register_source_kind",
]
