"""Curation runs on a real local Ray: nested pools for every kind (Hugging Face classifier
and generator built from configs included), incremental growth measured in documents
judged, the ledger against the data, dedup, and bad input."""

from __future__ import annotations

import json
import random

import numpy as np
import pyarrow as pa
import pyarrow.csv
import pyarrow.parquet as pq
import pytest

from annealscale.anneal.curation import curate, cut_point
from annealscale.anneal.minhash import jaccard
from annealscale.anneal.sources import CurationContext, SourceSpec
from annealscale.anneal.synthetic_math import generate_math_document
from annealscale.core.errors import AnnealscaleError

needs_ray = pytest.mark.usefixtures("ray_local")  # curation jobs run on Ray Data

PRICE_PER_TOKEN = 2.0**-10  # USD; powers of two keep sums of costs exact
PRICE_PER_DOC = 2.0**-6
RESOURCES = {"actors": 2, "batch_size": 16}


def _texts(pool) -> list[str]:
    return pq.read_table(pool.path).column("text").to_pylist()


def _n_tokens(tokenizer, texts):
    return [len(i) for i in tokenizer(list(texts), add_special_tokens=False)["input_ids"]]


def _assert_nested(pools):
    texts = [_texts(p) for p in pools]
    for small, large in zip(texts, texts[1:], strict=False):
        assert len(small) < len(large)
        assert large[: len(small)] == small
    for small, large in zip(pools, pools[1:], strict=False):
        assert small.candidates_processed < large.candidates_processed
        assert small.cost_usd < large.cost_usd
    return texts


@pytest.fixture(scope="module")
def crawl(tmp_path_factory, english_document):
    """A raw crawl (40 % math) over a Parquet and a JSONL shard, and seed examples."""
    root = tmp_path_factory.mktemp("crawl")
    rng = random.Random(0)
    is_math = [rng.random() < 0.4 for _ in range(160)]
    texts = [
        generate_math_document(3, i) if m else english_document(3, i) for i, m in enumerate(is_math)
    ]
    pq.write_table(pa.table({"text": texts[:80]}), root / "part-0.parquet")
    (root / "part-1.jsonl").write_text("".join(json.dumps({"text": t}) + "\n" for t in texts[80:]))
    negatives = [english_document(2, i) for i in range(40)]
    return {"path": root, "texts": texts, "is_math": is_math, "negatives": negatives}


# --- the cut -----------------------------------------------------------------------------


def test_cut_point_buys_while_the_running_cost_fits():
    costs = np.array([1.0, 2.0, 3.0])
    assert cut_point(costs, 0.0, 3.0, next_price=None, ended=False) == (2, True)
    assert cut_point(costs, 1.0, 3.0, next_price=None, ended=False) == (1, True)
    assert cut_point(costs, 0.0, 6.0, next_price=None, ended=False) == (3, False)  # judge more
    assert cut_point(costs, 0.0, 6.0, next_price=1.0, ended=False) == (3, True)  # known price
    assert cut_point(costs, 0.0, 60.0, next_price=None, ended=True) == (3, True)
    assert cut_point(costs, 7.0, 6.0, next_price=None, ended=False) == (0, True)  # setup overruns


# --- growing a pool judges only the extra candidates -------------------------------------


def _classifier(crawl, **extra) -> SourceSpec:
    params = {
        "raw_path": str(crawl["path"]),
        "positives": [generate_math_document(2, i) for i in range(40)],
        "negatives": crawl["negatives"],
        "usd_per_doc_scored": PRICE_PER_DOC,
        "n_features": 2**14,
        **extra,
    }
    return SourceSpec(name="web", kind="classifier_filter", params=params, resources=RESOURCES)


@needs_ray
def test_classifier_growth_judges_exactly_the_extra_documents(crawl, tokenizer, tmp_path):
    grown = CurationContext(tokenizer=tokenizer, cache_dir=tmp_path / "grown")
    fresh = CurationContext(tokenizer=tokenizer, cache_dir=tmp_path / "fresh")
    source = _classifier(crawl)
    small = curate(source, 0.5, grown)  # 32 documents scored
    large = curate(source, 1.5, grown)  # 96
    alone = curate(source, 1.5, fresh)

    assert small.run_docs_processed == 32
    assert large.run_docs_processed == 96 - 32  # only the extra candidates were scored
    assert alone.run_docs_processed == 96
    assert _texts(large) == _texts(alone)
    same = ("documents", "tokens", "candidates_processed", "tokens_processed", "cost_usd", "flops")
    assert [getattr(large, f) for f in same] == [getattr(alone, f) for f in same]
    # the ledger against the data: exact counts, prices and tokens of what was scored
    scored = crawl["texts"][:96]
    assert large.candidates_processed == 96
    assert large.cost_usd == 96 * PRICE_PER_DOC
    assert large.tokens_processed == sum(_n_tokens(tokenizer, scored))
    kept = _texts(large)
    assert large.documents == len(kept)
    assert large.tokens == sum(n + 1 for n in _n_tokens(tokenizer, kept))
    assert large.flops > small.flops > 0 and large.seconds > small.seconds > 0
    is_math = dict(zip(crawl["texts"], crawl["is_math"], strict=True))
    assert sum(is_math[t] for t in kept) / len(kept) >= 0.95  # inline seeds learned math


LEDGER = ("documents", "tokens", "candidates_processed", "tokens_processed", "cost_usd", "flops")


@pytest.fixture(scope="module")
def in_process_pools(crawl, tokenizer, tmp_path_factory):
    """The classifier source (with a dedup step) at two spends, judged in this process."""
    from annealscale.anneal.curation import IN_PROCESS_CANDIDATES

    ctx = CurationContext(tokenizer=tokenizer, cache_dir=tmp_path_factory.mktemp("in-process"))
    source = _classifier(crawl).replace(steps=[{"kind": "dedup", "params": {"threshold": 0.7}}])
    return source, [
        curate(source, s, ctx, in_process_candidates=IN_PROCESS_CANDIDATES) for s in (0.5, 1.5)
    ]


def test_in_process_judging_buys_nested_measured_pools(in_process_pools):
    source, pools = in_process_pools
    texts = _assert_nested(pools)
    assert pools[-1].candidates_processed == 96 and pools[-1].cost_usd == 96 * PRICE_PER_DOC
    assert pools[-1].seconds > 0 and pools[-1].flops > 0  # judged, and the work measured
    assert len(texts[-1]) == pools[-1].documents


@needs_ray
def test_ray_data_judging_buys_the_same_pools_as_in_process(
    in_process_pools, tokenizer, tmp_path, caplog
):
    source, expected = in_process_pools
    ctx = CurationContext(tokenizer=tokenizer, cache_dir=tmp_path / "ray-data")
    with caplog.at_level("INFO", logger="annealscale.anneal.curation"):
        pools = [curate(source, s, ctx, in_process_candidates=0) for s in (0.5, 1.5)]
    assert "(Ray Data)" in caplog.text and "(in process)" not in caplog.text
    for got, want in zip(pools, expected, strict=True):
        assert _texts(got) == _texts(want)
        assert [getattr(got, f) for f in LEDGER] == [getattr(want, f) for f in LEDGER]


@needs_ray
def test_per_token_growth_continues_where_the_last_run_stopped(tokenizer, tmp_path):
    source = SourceSpec(
        name="synth",
        kind="synthetic",
        params={"usd_per_token": PRICE_PER_TOKEN, "seed": 5},
        resources=RESOURCES,
    )
    grown = CurationContext(tokenizer=tokenizer, cache_dir=tmp_path / "grown", min_round=8)
    fresh = CurationContext(tokenizer=tokenizer, cache_dir=tmp_path / "fresh", min_round=8)
    spends = (1.0, 3.0, 9.0)
    pools = [curate(source, s, grown) for s in spends]
    alone = curate(source, spends[-1], fresh)

    texts = _assert_nested(pools)
    assert texts[-1] == _texts(alone)
    offered = [generate_math_document(5, i) for i in range(pools[-1].candidates_processed + 1)]
    assert texts[-1] == offered[:-1]
    n_tokens = _n_tokens(tokenizer, offered)
    for pool, spend in zip(pools, spends, strict=True):
        k = pool.candidates_processed
        assert pool.cost_usd == sum(n_tokens[:k]) * PRICE_PER_TOKEN <= spend
        assert pool.cost_usd + n_tokens[k] * PRICE_PER_TOKEN > spend
    # each run judged only candidates past what earlier runs judged: together no more
    # than one run from scratch, give or take the last round's estimate
    judged = sum(p.run_docs_processed for p in pools)
    assert pools[1].run_docs_processed < alone.run_docs_processed
    assert judged <= alone.run_docs_processed + 16
    assert pools[0].run_docs_processed >= pools[0].candidates_processed


# --- Hugging Face classifier and generator built from configs ----------------------------


@pytest.fixture(scope="module")
def tiny_hf(tokenizer, tmp_path_factory):
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM, LlamaForSequenceClassification

    root = tmp_path_factory.mktemp("hf")
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=2,
        max_position_embeddings=512,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
        bos_token_id=tokenizer.eos_token_id,
        num_labels=2,
    )
    torch.manual_seed(0)
    paths = {}
    for name, cls in (("classifier", LlamaForSequenceClassification), ("lm", LlamaForCausalLM)):
        model = cls(config)
        model.save_pretrained(root / name)
        tokenizer.save_pretrained(root / name)
        paths[name] = str(root / name)
    return paths


@needs_ray
def test_hf_classifier_top_fraction_nests_and_matches_direct_scoring(
    crawl, tiny_hf, tokenizer, tmp_path
):
    from annealscale.anneal.classifiers import HfSequenceClassifier

    source = SourceSpec(
        name="hf-web",
        kind="classifier_filter",
        params={
            "raw_path": str(crawl["path"]),
            "model_path": tiny_hf["classifier"],
            "usd_per_doc_scored": PRICE_PER_DOC,
            "top_fraction": 0.5,
            "calibration_docs": 64,
            "max_length": 64,
        },
        resources=RESOURCES,
    )
    ctx = CurationContext(tokenizer=tokenizer, cache_dir=tmp_path)
    setup_usd = 64 * PRICE_PER_DOC  # calibration scoring, paid once
    # the largest spend first: one Ray Data job, then smaller spends cut the judged stream
    pools = [curate(source, setup_usd + n * PRICE_PER_DOC, ctx) for n in (160, 80, 32)][::-1]
    assert pools[-1].run_docs_processed == 160 and pools[0].run_docs_processed == 0
    texts = _assert_nested(pools)
    assert [p.candidates_processed for p in pools] == [32, 80, 160]

    direct = HfSequenceClassifier(
        tiny_hf["classifier"], device="cpu", positive_label=1, max_length=64
    )
    calibration, _ = direct.score(crawl["texts"][:64])
    threshold = np.quantile(calibration, 0.5)
    scores = np.concatenate([direct.score(crawl["texts"][i : i + 7])[0] for i in range(0, 160, 7)])
    expected = [t for t, s in zip(crawl["texts"], scores, strict=True) if s >= threshold]
    assert texts[-1] == expected  # Ray Data batches of 16, direct batches of 7: same scores
    assert 0.3 < len(expected) / 160 < 0.7


@pytest.mark.gpu
@needs_ray
def test_hf_classifier_on_a_gpu_actor_scores_as_on_cpu(crawl, tiny_hf, tokenizer, tmp_path):
    import torch

    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA device")

    def source(gpus: float) -> SourceSpec:
        return SourceSpec(
            name="hf-web",
            kind="classifier_filter",
            params={
                "raw_path": str(crawl["path"]),
                "model_path": tiny_hf["classifier"],
                "usd_per_doc_scored": PRICE_PER_DOC,
                "threshold": 0.5,
                "max_length": 64,
            },
            resources={"actors": 1, "gpus_per_actor": gpus, "batch_size": 16},
        )

    spend = 64 * PRICE_PER_DOC
    cpu = curate(source(0), spend, CurationContext(tokenizer=tokenizer, cache_dir=tmp_path / "c"))
    gpu = curate(source(1), spend, CurationContext(tokenizer=tokenizer, cache_dir=tmp_path / "g"))
    # fp32 kernels differ between devices: a score at the threshold may flip
    assert len(set(_texts(gpu)) ^ set(_texts(cpu))) <= 2
    assert gpu.candidates_processed == cpu.candidates_processed == 64
    assert gpu.seconds > 0


def _generator(tiny_hf, batch_size: int) -> SourceSpec:
    return SourceSpec(
        name="llm",
        kind="synthetic",
        params={
            "generator": "hf_causal_lm",
            "model_path": tiny_hf["lm"],
            "prompts": ["Compute the derivative of", "Solve the equation", "Let x be"],
            "max_new_tokens": 12,
            "temperature": 0.9,
            "top_k": 50,
            "top_p": 0.95,
            "usd_per_token": PRICE_PER_TOKEN,
            "seed": 1,
        },
        resources={"actors": 2, "batch_size": batch_size},
    )


@needs_ray
def test_hf_generator_nests_and_does_not_depend_on_batching(tiny_hf, tokenizer, tmp_path):
    ctx = CurationContext(tokenizer=tokenizer, cache_dir=tmp_path / "a", min_round=8)
    spends = (8 * PRICE_PER_TOKEN * 12, 24 * PRICE_PER_TOKEN * 12, 48 * PRICE_PER_TOKEN * 12)
    pools = [curate(_generator(tiny_hf, 4), s, ctx) for s in spends[::-1]][::-1]
    texts = _assert_nested(pools)
    for pool in pools:
        # spend buys generated tokens: at most 12 per document, EOS included
        assert pool.cost_usd <= pool.candidates_processed * 12 * PRICE_PER_TOKEN
        assert pool.flops > 0
    assert len(set(texts[-1])) > 0.9 * len(texts[-1])  # sampled, not one greedy string

    other = CurationContext(tokenizer=tokenizer, cache_dir=tmp_path / "b", min_round=8)
    rebatched = curate(_generator(tiny_hf, 3), spends[1], other)
    assert _texts(rebatched) == texts[1]


# --- dedup -------------------------------------------------------------------------------


@needs_ray
def test_dedup_removes_near_duplicates_and_keeps_pools_nested(tokenizer, tmp_path):
    rng = random.Random(1)
    vocabulary = [f"word{j}" for j in range(500)]
    originals = [
        generate_math_document(7, i) + " " + " ".join(rng.choices(vocabulary, k=40))
        for i in range(60)
    ]
    docs, planted = [], []
    for i, doc in enumerate(originals):
        docs.append(doc)
        if i % 3 == 1:  # a near copy with one word changed, later in the stream
            words = doc.split(" ")
            words[rng.randrange(len(words))] = "changed"
            planted.append(" ".join(words))
            docs.append(planted[-1])
    path = tmp_path / "docs.parquet"
    pq.write_table(pa.table({"text": docs}), path)
    params = {"path": str(path), "usd_per_token": PRICE_PER_TOKEN}
    plain = SourceSpec(name="b", kind="as_is", params=params, resources=RESOURCES)
    deduped = SourceSpec(
        name="b",
        kind="as_is",
        params=params,
        steps=[{"kind": "dedup", "params": {"threshold": 0.7, "shingle": 3}}],
        resources=RESOURCES,
    )
    assert deduped.identity != plain.identity
    ctx = CurationContext(tokenizer=tokenizer, cache_dir=tmp_path / "cache")
    total = sum(_n_tokens(tokenizer, docs)) * PRICE_PER_TOKEN
    pools = [curate(deduped, total * f, ctx) for f in (0.3, 0.6, 1.0)]
    texts = _assert_nested(pools)
    assert texts[-1] == originals  # every planted copy removed, every original kept
    assert all(jaccard(a, b, 3) < 0.7 for a, b in zip(originals, originals[1:], strict=False))
    full = curate(plain, total, ctx)
    assert full.documents == len(docs)
    assert pools[-1].candidates_processed == len(docs)  # copies were paid for, then dropped
    assert pools[-1].flops > full.flops == 0.0  # MinHash compute is in the ledger


def test_minhash_estimates_jaccard():
    from annealscale.anneal.minhash import permutations, signature

    a, b = permutations(256, 0)
    x = " ".join(f"w{i}" for i in range(200))
    y = " ".join(f"w{i}" for i in range(50, 250))
    exact = jaccard(x, y, 1)
    estimate = float(np.mean(signature(x, a, b, 1) == signature(y, a, b, 1)))
    assert exact == pytest.approx(150 / 250)
    assert abs(estimate - exact) < 0.08  # standard error sqrt(J(1-J)/256) = 0.03


# --- inputs ------------------------------------------------------------------------------


@needs_ray
def test_saved_dataset_and_csv_inputs_buy_nested_pools(tokenizer, tmp_path):
    import datasets

    texts = [generate_math_document(9, i) for i in range(40)]
    datasets.DatasetDict(
        {
            "train": datasets.Dataset.from_dict({"body": texts}),
            "test": datasets.Dataset.from_dict({"body": ["x"]}),
        }
    ).save_to_disk(str(tmp_path / "saved"))
    csv_path = tmp_path / "docs.csv"
    pyarrow.csv.write_csv(pa.table({"id": list(range(40)), "body": texts}), csv_path)
    ctx = CurationContext(tokenizer=tokenizer, cache_dir=tmp_path / "cache")
    cost = sum(_n_tokens(tokenizer, texts)) * PRICE_PER_TOKEN
    for path in (str(tmp_path / "saved") + "#train", str(csv_path)):
        source = SourceSpec(
            name="t",
            kind="as_is",
            params={"path": path, "usd_per_token": PRICE_PER_TOKEN, "text_field": "body"},
            resources=RESOURCES,
        )
        pools = [curate(source, cost * f, ctx) for f in (0.2, 0.5, 0.9)]
        assert texts[: pools[-1].documents] == _assert_nested(pools)[-1]


@needs_ray
def test_skipped_records_and_empty_shards_are_recorded_in_the_ledger(tokenizer, tmp_path):
    raw = tmp_path / "raw"
    raw.mkdir()
    good = [generate_math_document(4, i) for i in range(6)]
    lines = [json.dumps({"text": t}).encode() for t in good]
    lines.insert(2, b'{"text": "caf\xe9 latin-1"}')  # not UTF-8
    (raw / "a.jsonl").write_bytes(b"\n".join(lines) + b"\n")
    (raw / "b.parquet").write_bytes(b"")  # an empty shard
    source = SourceSpec(
        name="t",
        kind="as_is",
        params={"path": str(raw), "usd_per_token": PRICE_PER_TOKEN},
        resources=RESOURCES,
    )
    ctx = CurationContext(tokenizer=tokenizer, cache_dir=tmp_path / "cache")
    pool = curate(source, 100.0, ctx)
    assert _texts(pool) == good
    ledger = pool.ledger()
    assert ledger["curation_skipped_records"] == 1
    assert ledger["curation_empty_files"] == 1


def _curate_error(source, ctx, spend=1.0) -> str:
    with pytest.raises(AnnealscaleError) as info:
        curate(source, spend, ctx)
    message = str(info.value)
    assert "\n" not in message
    return message


def test_bad_inputs_name_the_file(tokenizer, tmp_path):
    ctx = CurationContext(tokenizer=tokenizer, cache_dir=tmp_path / "cache")

    def as_is(path, field="text"):
        params = {"path": str(path), "usd_per_token": PRICE_PER_TOKEN, "text_field": field}
        return SourceSpec(name="t", kind="as_is", params=params, resources=RESOURCES)

    missing = tmp_path / "missing.parquet"
    assert _curate_error(as_is(missing), ctx) == (
        f"{missing}: no such file or directory; check the path in the spec"
    )
    corrupt = tmp_path / "corrupt.parquet"
    corrupt.write_bytes(b"PAR1 not really" * 10)
    assert _curate_error(as_is(corrupt), ctx).startswith(f"{corrupt}: not a readable Parquet")
    bad_csv = tmp_path / "bad.csv"
    bad_csv.write_text("text,n\nfine,1\ntoo,many,fields\n")
    assert _curate_error(as_is(bad_csv), ctx).startswith(f"{bad_csv}: not a readable CSV")
    no_field = tmp_path / "nofield.csv"
    no_field.write_text("body\nhello\n")
    assert _curate_error(as_is(no_field), ctx).startswith(
        f"{no_field}: has no column 'text' (columns: body)"
    )
    latin = tmp_path / "latin.jsonl"
    latin.write_bytes(b'{"text": "caf\xe9"}\n{"text": "na\xefve"}\n')
    assert _curate_error(as_is(latin), ctx) == (
        f"{latin}: no record is valid UTF-8 text; re-encode the file as UTF-8"
    )
    only_empty = tmp_path / "empty"
    only_empty.mkdir()
    (only_empty / "a.jsonl").write_text("\n\n")
    assert _curate_error(as_is(only_empty), ctx) == (
        f"{only_empty}: contains no non-empty 'text' values"
    )
    assert not list((tmp_path / "cache").rglob("spend-*.json"))  # no pool was recorded


def test_inputs_by_uri_glob_saved_dataset_and_hub(tmp_path):
    from annealscale.anneal.documents import read_texts

    (tmp_path / "shards").mkdir()
    pq.write_table(pa.table({"text": ["p1", "p2"]}), tmp_path / "shards" / "a.parquet")
    (tmp_path / "shards" / "b.jsonl").write_text('{"text": "j1"}\n')
    # s3:// and gs:// go through the same pyarrow filesystem code; no cloud is reachable
    # here, so a file:// URI stands in for them
    uri = f"file://{tmp_path}/shards/*.parquet"
    assert read_texts(uri) == ["p1", "p2"]
    assert read_texts(f"file://{tmp_path}/shards") == ["p1", "p2", "j1"]
    with pytest.raises(AnnealscaleError, match="no such file or directory"):
        read_texts(f"file://{tmp_path}/nowhere")

    import datasets

    datasets.Dataset.from_dict({"t": ["d1", "", "d2"]}).save_to_disk(str(tmp_path / "ds"))
    assert read_texts(str(tmp_path / "ds"), "t") == ["d1", "d2"]
    with pytest.raises(AnnealscaleError, match=r"has no column 'text' \(columns: t\)"):
        read_texts(str(tmp_path / "ds"))
    with pytest.raises(AnnealscaleError) as info:
        read_texts("hub:someone/not-a-dataset")  # offline: a clear line, not a traceback
    assert str(info.value).startswith("hub:someone/not-a-dataset: cannot load")
    assert "\n" not in str(info.value)


def test_spec_errors_name_the_field():
    from annealscale.core.errors import SpecError

    with pytest.raises(SpecError, match="params.model_path: give either"):
        SourceSpec(
            name="x",
            kind="classifier_filter",
            params={"raw_path": "r", "usd_per_doc_scored": 1.0},
        )
    with pytest.raises(SpecError, match="threshold: give threshold or top_fraction"):
        SourceSpec(
            name="x",
            kind="classifier_filter",
            params={
                "raw_path": "r",
                "usd_per_doc_scored": 1.0,
                "positives": ["a"],
                "negatives": ["b"],
                "threshold": 0.5,
                "top_fraction": 0.5,
            },
        )
    with pytest.raises(SpecError, match=r"steps\[0\].kind: unknown curation step 'dedupe'"):
        SourceSpec(
            name="x", kind="synthetic", params={"usd_per_token": 1.0}, steps=[{"kind": "dedupe"}]
        )
    plain = SourceSpec(name="x", kind="synthetic", params={"usd_per_token": 1.0})
    moved = SourceSpec(
        name="y", kind="synthetic", params={"usd_per_token": 1.0}, resources={"actors": 3}
    )
    assert plain.identity == moved.identity  # resources and names never split a cache
