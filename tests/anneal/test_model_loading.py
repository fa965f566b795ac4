"""Loading any causal LM saved with ``save_pretrained``: tokenizer special tokens and
padding, and the shape the FLOP formulas read, for three architectures."""

from __future__ import annotations

import pytest

from annealscale.anneal.flops import forward_flops_per_token, train_flops
from annealscale.anneal.model import checkpoint_location, load_model, load_tokenizer, model_shape
from annealscale.core.errors import AnnealscaleError


def _config(arch: str, vocab: int):
    from transformers import GPT2Config, GPTNeoXConfig, LlamaConfig

    if arch == "llama":
        return LlamaConfig(
            vocab_size=vocab,
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=3,
            num_attention_heads=2,
            max_position_embeddings=64,
        )
    if arch == "gpt2":
        return GPT2Config(vocab_size=vocab, n_embd=32, n_layer=3, n_head=2, n_positions=64)
    return GPTNeoXConfig(
        vocab_size=vocab,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=3,
        num_attention_heads=2,
        max_position_embeddings=64,
    )


@pytest.fixture(scope="module")
def checkpoints(tokenizer, tmp_path_factory):
    from transformers import AutoModelForCausalLM

    out = {}
    for arch in ("llama", "gpt2", "gpt_neox"):
        path = tmp_path_factory.mktemp(arch)
        AutoModelForCausalLM.from_config(_config(arch, len(tokenizer))).save_pretrained(path)
        tokenizer.save_pretrained(path)
        out[arch] = str(path)
    return out


@pytest.mark.parametrize("arch", ["llama", "gpt2", "gpt_neox"])
def test_shape_counts_non_embedding_parameters_of_each_architecture(checkpoints, arch):
    model = load_model(checkpoints[arch])
    shape = model_shape(model)
    embeddings = {
        id(p)
        for m in model.modules()
        if m.__class__.__name__ == "Embedding"  # token (and GPT-2's position) embeddings
        for p in m.parameters(recurse=False)
    }
    output = model.get_output_embeddings().weight
    expected = sum(
        p.numel() for p in model.parameters() if id(p) not in embeddings and p is not output
    )
    assert shape.non_embedding_params == expected > 0
    assert (shape.n_layer, shape.d_model, shape.vocab_size) == (3, 32, model.config.vocab_size)
    # 6N plus attention plus de-embedding, per token, at context 64
    per_token = 6 * expected + 6 * 3 * 64 * 32 + 6 * 32 * model.config.vocab_size
    assert train_flops(shape, 1000, 64) == pytest.approx(1000 * per_token)
    assert forward_flops_per_token(shape, 64) * 3 == pytest.approx(per_token)


def test_missing_pad_token_falls_back_to_eos(tokenizer, tmp_path):
    tokenizer = load_tokenizer_copy(tokenizer, tmp_path, pad=None)
    loaded = load_tokenizer(str(tmp_path))
    assert loaded.pad_token_id == loaded.eos_token_id == tokenizer.eos_token_id


def test_own_pad_token_is_kept(tokenizer, tmp_path):
    load_tokenizer_copy(tokenizer, tmp_path, pad="<pad>")
    loaded = load_tokenizer(str(tmp_path))
    assert loaded.pad_token == "<pad>" and loaded.pad_token_id != loaded.eos_token_id


def test_tokenizer_without_eos_is_one_clear_line(tokenizer, tmp_path):
    load_tokenizer_copy(tokenizer, tmp_path, pad=None, eos=None)
    with pytest.raises(AnnealscaleError, match=r"^base_model.path: tokenizer at .* has no EOS"):
        load_tokenizer(str(tmp_path))


def test_missing_local_checkpoint_is_named(tmp_path):
    with pytest.raises(AnnealscaleError, match=r"^base_model.path: '.*nothing' does not exist"):
        load_model(str(tmp_path / "nothing"))


def load_tokenizer_copy(tokenizer, path, *, pad, eos="<|endoftext|>"):
    import copy

    copied = copy.deepcopy(tokenizer)
    if pad is not None:
        copied.add_special_tokens({"pad_token": pad})
    else:
        copied.pad_token = None
    copied.eos_token = eos
    copied.save_pretrained(path)
    return copied


def test_a_relative_checkpoint_loads_from_any_working_directory(tiny_assets, tmp_path, monkeypatch):
    """Trials and Train workers run in directories of their own: the location handed to
    them must not depend on the directory the sweep started in."""
    import shutil

    project = tmp_path / "project"
    shutil.copytree(tiny_assets.base_model(), project / "model")
    monkeypatch.chdir(project)
    location = checkpoint_location("model")
    assert location == str((project / "model").resolve())
    monkeypatch.chdir(tmp_path)  # as a worker elsewhere would be
    assert load_model(location).config.vocab_size == load_tokenizer(location).vocab_size
    assert checkpoint_location("org/some-hub-model") == "org/some-hub-model"
