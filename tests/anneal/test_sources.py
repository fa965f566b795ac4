"""Curation: spend buys nested pools of real documents, never more than the spend, cached
by source identity and spend, with a clear error when nothing is bought."""

from __future__ import annotations

import json
import random
import shutil
from dataclasses import dataclass, replace
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from annealscale.anneal.sources import CurationContext, SourceSpec, curate
from annealscale.anneal.synthetic_math import generate_math_document
from annealscale.core.errors import AnnealscaleError

pytestmark = pytest.mark.usefixtures("ray_local")  # curation runs as Ray Data jobs

PRICE_PER_TOKEN = 2.0**-10  # USD; powers of two keep every sum of costs exact
PRICE_PER_DOC = 2.0**-6  # USD per raw document scored
CLASSIFIER_SPENDS = (0.5, 1.25, 2.5)  # buys exactly 32, 80 and 160 scored documents
RAW_DOCS = 200


@dataclass(frozen=True)
class Corpus:
    textbook: Path
    textbook_texts: list[str]
    positives: Path
    negatives: Path
    raw: Path
    raw_texts: list[str]
    raw_is_math: list[bool]
    raw_english: Path


@pytest.fixture(scope="module")
def corpus(tmp_path_factory, english_document) -> Corpus:
    root = tmp_path_factory.mktemp("corpus")
    textbook_texts = [generate_math_document(1, i) for i in range(120)]
    textbook = root / "textbook.parquet"
    pq.write_table(pa.table({"text": textbook_texts, "id": list(range(120))}), textbook)

    (root / "seeds").mkdir()
    positives = root / "seeds" / "positives.jsonl"
    positives.write_text(
        "".join(json.dumps({"text": generate_math_document(2, i)}) + "\n" for i in range(80))
    )
    negatives = root / "seeds" / "negatives.parquet"
    pq.write_table(pa.table({"text": [english_document(2, i) for i in range(80)]}), negatives)

    # the raw crawl: 40 % math, shuffled, split over a Parquet and a JSONL file
    rng = random.Random(0)
    raw_is_math = [rng.random() < 0.4 for _ in range(RAW_DOCS)]
    raw_texts = [
        generate_math_document(3, i) if is_math else english_document(3, i)
        for i, is_math in enumerate(raw_is_math)
    ]
    raw = root / "raw"
    raw.mkdir()
    pq.write_table(pa.table({"text": raw_texts[:100]}), raw / "part-0.parquet")
    (raw / "part-1.jsonl").write_text(
        "".join(json.dumps({"text": t}) + "\n" for t in raw_texts[100:])
    )
    raw_english = root / "raw_english.parquet"
    pq.write_table(pa.table({"text": [english_document(4, i) for i in range(50)]}), raw_english)
    return Corpus(
        textbook, textbook_texts, positives, negatives, raw, raw_texts, raw_is_math, raw_english
    )


def _as_is(corpus: Corpus, path: Path | None = None) -> SourceSpec:
    params = {"path": str(path or corpus.textbook), "usd_per_token": PRICE_PER_TOKEN}
    return SourceSpec(name="textbook", kind="as_is", params=params)


def _classifier(corpus: Corpus, raw: Path | None = None) -> SourceSpec:
    params = {
        "raw_path": str(raw or corpus.raw),
        "positives_path": str(corpus.positives),
        "negatives_path": str(corpus.negatives),
        "usd_per_doc_scored": PRICE_PER_DOC,
        "n_features": 2**14,
    }
    return SourceSpec(name="web", kind="classifier_filter", params=params)


def _synthetic() -> SourceSpec:
    return SourceSpec(
        name="synth", kind="synthetic", params={"usd_per_token": PRICE_PER_TOKEN, "seed": 3}
    )


def _synthetic_ngram(corpus: Corpus) -> SourceSpec:
    params = {
        "generator": "ngram_lm",
        "seed_path": str(corpus.positives),
        "worked_examples_fraction": 0.25,
        "usd_per_token": PRICE_PER_TOKEN,
    }
    return SourceSpec(name="synth-lm", kind="synthetic", params=params)


def _n_tokens(tokenizer, texts: list[str]) -> list[int]:
    return [len(ids) for ids in tokenizer(texts, add_special_tokens=False)["input_ids"]]


@pytest.fixture(scope="module")
def spends(corpus, tokenizer) -> dict[str, tuple[float, ...]]:
    textbook_cost = sum(_n_tokens(tokenizer, corpus.textbook_texts)) * PRICE_PER_TOKEN
    return {
        "as_is": tuple(textbook_cost * f for f in (0.1, 0.35, 0.8)),
        "classifier_filter": CLASSIFIER_SPENDS,
        "synthetic": (2.0, 6.0, 18.0),
        "synthetic_ngram": (2.0, 6.0, 18.0),
    }


def _source(kind: str, corpus: Corpus) -> SourceSpec:
    builders = {
        "as_is": _as_is,
        "classifier_filter": _classifier,
        "synthetic": lambda _: _synthetic(),
        "synthetic_ngram": _synthetic_ngram,
    }
    return builders[kind](corpus)


def _texts(pool) -> list[str]:
    table = pq.read_table(pool.path)
    assert table.column_names == ["text"]
    return table.column("text").to_pylist()


@pytest.mark.parametrize("kind", ["as_is", "classifier_filter", "synthetic", "synthetic_ngram"])
def test_larger_spend_extends_the_same_pool(kind, corpus, spends, tokenizer, tmp_path):
    ctx = CurationContext(tokenizer=tokenizer, cache_dir=tmp_path)
    source = _source(kind, corpus)
    pools = [curate(source, spend, ctx) for spend in spends[kind]]
    texts = [_texts(p) for p in pools]

    for small, large in zip(texts, texts[1:], strict=False):
        assert len(small) < len(large)
        assert large[: len(small)] == small  # nested: a prefix, in the same order
    for pool, kept, spend in zip(pools, texts, spends[kind], strict=True):
        assert 0 < pool.cost_usd <= spend
        assert pool.documents == len(kept)
        assert pool.tokens == sum(n + 1 for n in _n_tokens(tokenizer, kept))  # EOS included
        assert pool.seconds >= 0
    for small, large in zip(pools, pools[1:], strict=False):
        assert small.cost_usd < large.cost_usd
        assert small.tokens < large.tokens
        assert small.candidates_processed < large.candidates_processed
        assert small.flops <= large.flops


@pytest.mark.parametrize("kind", ["as_is", "synthetic"])
def test_per_token_sources_buy_until_the_next_document_would_overrun(
    kind, corpus, spends, tokenizer, tmp_path
):
    ctx = CurationContext(tokenizer=tokenizer, cache_dir=tmp_path)
    offered = (
        corpus.textbook_texts
        if kind == "as_is"
        else [generate_math_document(3, i) for i in range(400)]
    )
    n_tokens = _n_tokens(tokenizer, offered)
    for spend in spends[kind]:
        pool = curate(_source(kind, corpus), spend, ctx)
        k = pool.documents
        assert k < len(offered)
        assert _texts(pool) == offered[:k]  # everything offered is kept, in order
        assert pool.candidates_processed == k
        assert pool.cost_usd == sum(n_tokens[:k]) * PRICE_PER_TOKEN
        assert pool.cost_usd + n_tokens[k] * PRICE_PER_TOKEN > spend
        assert pool.flops == 0.0


def test_classifier_scores_what_was_paid_for_and_keeps_the_math(corpus, tokenizer, tmp_path):
    ctx = CurationContext(tokenizer=tokenizer, cache_dir=tmp_path)
    for spend in CLASSIFIER_SPENDS:
        pool = curate(_classifier(corpus), spend, ctx)
        processed = pool.candidates_processed
        assert processed == spend / PRICE_PER_DOC
        assert pool.cost_usd == processed * PRICE_PER_DOC
        assert pool.flops > 0  # classifier training plus scoring

        kept = _texts(pool)
        scored = corpus.raw_texts[:processed]
        # kept documents are a subsequence of the scored prefix of the crawl
        it = iter(scored)
        assert all(any(t == s for s in it) for t in kept)
        is_math = dict(zip(corpus.raw_texts, corpus.raw_is_math, strict=True))
        true_pos = sum(is_math[t] for t in kept)
        assert true_pos / len(kept) >= 0.95  # precision
        assert true_pos / sum(is_math[t] for t in scored) >= 0.9  # recall


def test_classifier_spend_beyond_the_crawl_scores_it_all(corpus, tokenizer, tmp_path):
    ctx = CurationContext(tokenizer=tokenizer, cache_dir=tmp_path)
    pool = curate(_classifier(corpus), 100.0, ctx)
    assert pool.candidates_processed == RAW_DOCS
    assert pool.cost_usd == RAW_DOCS * PRICE_PER_DOC


def test_second_curate_is_served_from_the_cache(corpus, tokenizer, tmp_path):
    textbook = tmp_path / "input" / "textbook.parquet"
    textbook.parent.mkdir()
    shutil.copy(corpus.textbook, textbook)
    ctx = CurationContext(tokenizer=tokenizer, cache_dir=tmp_path / "cache")
    source = _as_is(corpus, textbook)

    first = curate(source, 2.0, ctx)
    meta = first.path.with_suffix(".json")
    stamps = (meta.stat().st_mtime_ns, first.path.stat().st_mtime_ns)

    textbook.unlink()  # re-curating would now fail
    again = curate(source, 2.0, ctx)
    assert first.run_docs_processed >= first.candidates_processed > 0
    assert again.run_docs_processed == 0  # nothing judged again
    assert again == replace(
        first, run_docs_processed=0, run_tokens_processed=0, run_device_seconds=0.0
    )
    assert (meta.stat().st_mtime_ns, first.path.stat().st_mtime_ns) == stamps
    # a new spend within the judged stream is cut from it: nothing judged, no input read
    larger = curate(source, 3.0, ctx)
    assert larger.run_docs_processed == 0
    assert _texts(larger)[: first.documents] == _texts(first)
    assert larger.documents > first.documents


def test_the_display_name_does_not_split_the_cache(corpus, tokenizer, tmp_path):
    ctx = CurationContext(tokenizer=tokenizer, cache_dir=tmp_path)
    first = curate(_as_is(corpus), 2.0, ctx)
    renamed = SourceSpec(name="books", kind="as_is", params=_as_is(corpus).params)
    assert curate(renamed, 2.0, ctx).path == first.path


def _no_documents_error(source, spend, ctx) -> str:
    with pytest.raises(AnnealscaleError) as info:
        curate(source, spend, ctx)
    message = str(info.value)
    assert "\n" not in message
    assert not list(Path(ctx.cache_dir).rglob("spend-*"))  # nothing cached as a pool
    return message


def test_spend_below_one_document_keeps_nothing(corpus, tokenizer, tmp_path):
    ctx = CurationContext(tokenizer=tokenizer, cache_dir=tmp_path)
    message = _no_documents_error(_as_is(corpus), PRICE_PER_TOKEN / 2, ctx)
    assert message.startswith("source 'textbook': spend ")
    assert "keeps no documents (0 processed)" in message

    message = _no_documents_error(_classifier(corpus), PRICE_PER_DOC / 2, ctx)
    assert message.startswith("source 'web': ")
    assert "(0 processed)" in message


def test_filter_that_rejects_everything_keeps_nothing(corpus, tokenizer, tmp_path):
    ctx = CurationContext(tokenizer=tokenizer, cache_dir=tmp_path)
    message = _no_documents_error(_classifier(corpus, raw=corpus.raw_english), 1.0, ctx)
    assert message.startswith("source 'web': spend 1 USD keeps no documents (50 processed)")
    assert "loosen the filter" in message


def test_synthetic_documents_depend_only_on_seed_and_index():
    docs = [generate_math_document(0, i) for i in range(100)]
    assert docs == [generate_math_document(0, i) for i in range(100)]
    # a few templates with small number ranges repeat now and then (by design), but the
    # index, not chance, picks each document
    assert len(set(docs)) >= 95
    assert all(a != b for a, b in zip(docs, docs[1:], strict=False))
    assert generate_math_document(0, 5) != generate_math_document(1, 5)
    assert all(d.strip() for d in docs)
