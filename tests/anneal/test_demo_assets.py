"""The demo's corpus and base model: deterministic, split by module, a real checkpoint."""

from __future__ import annotations

import json
import math

import numpy as np
import pyarrow.parquet as pq
import pytest

from annealscale.anneal.demo_corpus import DemoCorpusConfig, build_demo_corpus
from annealscale.anneal.evaluate import bits_per_byte, nll_and_bytes
from annealscale.anneal.model import load_model, load_tokenizer, model_shape, token_byte_lengths
from annealscale.anneal.packing import pack_texts

SMALL = DemoCorpusConfig(
    math_packages=("mpmath",),
    general_packages=("email", "json"),
    max_docs_per_package=120,
    seed_docs=20,
)


def _table(corpus, split):
    return pq.read_table(corpus.split(split)).to_pandas()


def test_corpus_is_deterministic_and_cached(tmp_path):
    first = build_demo_corpus(tmp_path / "a", SMALL)
    second = build_demo_corpus(tmp_path / "b", SMALL)
    hashes = lambda c: {k: v["sha256"] for k, v in c.manifest["splits"].items()}  # noqa: E731
    assert hashes(first) == hashes(second)
    stamp = first.split("web").stat().st_mtime_ns
    assert build_demo_corpus(tmp_path / "a", SMALL).root == first.root
    assert first.split("web").stat().st_mtime_ns == stamp
    manifest = first.manifest
    assert manifest["package_versions"]["mpmath"] not in ("", "missing")
    assert manifest["splits"]["math_train"]["documents"] > 0


def test_evaluation_modules_appear_in_no_training_pool(tmp_path):
    corpus = build_demo_corpus(tmp_path, SMALL)
    eval_modules = set(_table(corpus, "math_eval")["module"]) | set(
        _table(corpus, "general_eval")["module"]
    )
    assert eval_modules, "the split must hold out some modules"
    for split in ("general_train", "math_train", "web", "math_seed", "general_seed"):
        assert not eval_modules & set(_table(corpus, split)["module"]), split


def test_general_pool_leaves_out_the_math_packages(tmp_path):
    corpus = build_demo_corpus(tmp_path, SMALL)
    assert set(_table(corpus, "general_train")["package"]) == {"email", "json"}
    assert set(_table(corpus, "math_train")["package"]) == {"mpmath"}
    web = _table(corpus, "web")
    assert set(web["package"]) == {"mpmath", "email", "json"}
    n_train = len(_table(corpus, "general_train")) + len(_table(corpus, "math_train"))
    assert len(web) == n_train


def test_base_model_is_a_real_checkpoint_that_learned(tiny_assets):
    path = str(tiny_assets.base_model())
    meta = json.loads((tiny_assets.base_model() / "annealscale_base.json").read_text())
    model = load_model(path)
    tokenizer = load_tokenizer(path)
    assert type(model).__name__ == "LlamaForCausalLM"
    assert meta["parameters"] == sum(p.numel() for p in model.parameters())
    assert meta["final_train_loss"] < math.log(len(tokenizer)) - 1.0
    shape = model_shape(model)
    assert 0 < shape.non_embedding_params < meta["parameters"]


def test_token_bytes_sum_to_the_text_bytes(tiny_assets):
    path = str(tiny_assets.base_model())
    tokenizer = load_tokenizer(path)
    lengths = token_byte_lengths(path)
    for text in (
        "Return the gcd of a and b.",
        "résumé — naïve café ∑ x²",
        "def f(x):\n    return 1",
    ):
        ids = tokenizer(text, add_special_tokens=False)["input_ids"]
        assert int(lengths[ids].sum()) == len(text.encode("utf-8"))
    assert lengths[tokenizer.eos_token_id] == 0


def test_bits_per_byte_matches_the_model_loss(tiny_assets):
    import torch

    path = str(tiny_assets.base_model())
    texts = pq.read_table(tiny_assets.corpus().split("general_eval")).column("text").to_pylist()
    windows = pack_texts(texts[:40], path, 32)[:12]
    model = load_model(path)
    lengths = token_byte_lengths(path)
    nll, nbytes = nll_and_bytes(model, windows, lengths, batch_size=5)
    with torch.no_grad():
        batch = torch.as_tensor(windows).long()
        logits = model(input_ids=batch[:, :-1]).logits
        losses = torch.nn.functional.cross_entropy(
            logits.reshape(-1, logits.size(-1)), batch[:, 1:].reshape(-1), reduction="none"
        ).numpy()
    targets = windows[:, 1:].reshape(-1)
    keep = lengths[targets] > 0
    assert nbytes == int(lengths[targets].sum())
    assert nll == pytest.approx(float(losses[keep].sum()), rel=1e-5)
    assert bits_per_byte(nll, nbytes) == pytest.approx(
        float(losses[keep].sum()) / np.log(2) / nbytes, rel=1e-5
    )


def test_tied_and_untied_models_of_one_shape_cost_the_same():
    from transformers import LlamaConfig, LlamaForCausalLM

    from annealscale.anneal.flops import train_flops

    def shape(tied: bool):
        config = LlamaConfig(
            vocab_size=300,
            hidden_size=32,
            num_hidden_layers=2,
            num_attention_heads=2,
            intermediate_size=64,
            tie_word_embeddings=tied,
        )
        return model_shape(LlamaForCausalLM(config))

    tied, untied = shape(True), shape(False)
    assert tied == untied
    per_layer = 4 * 32 * 32 + 3 * 32 * 64 + 2 * 32  # attention, MLP, two RMSNorm weights
    assert tied.non_embedding_params == 2 * per_layer + 32  # plus the final norm
    assert train_flops(tied, 1, 16) == 3 * (
        2 * tied.non_embedding_params + 2 * 2 * 16 * 32 + 2 * 32 * 300
    )
