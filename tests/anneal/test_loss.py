"""The chunked next-token loss agrees with the plain full-logits cross-entropy, in value and
in every parameter's gradient, on tiny Hugging Face models built from configs."""

from __future__ import annotations

from unittest import mock

import pytest
import torch

from annealscale.anneal.loss import LossModel, mean_token_nll, token_nll, token_nll_and_argmax


def _model(arch: str):
    from transformers import AutoModelForCausalLM, GPT2Config, LlamaConfig

    torch.manual_seed(0)
    if arch == "llama":
        config = LlamaConfig(
            vocab_size=97,
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=2,
            num_key_value_heads=1,
            max_position_embeddings=64,
        )
    else:  # tied input and output embeddings
        config = GPT2Config(vocab_size=97, n_embd=32, n_layer=2, n_head=2, n_positions=64)
    return AutoModelForCausalLM.from_config(config).float().eval()  # no dropout


def _plain(model, inputs, targets):
    logits = model(input_ids=inputs).logits.float()  # (B, T, V)
    return torch.nn.functional.cross_entropy(
        logits.reshape(-1, logits.size(-1)), targets.reshape(-1)
    )


@pytest.mark.parametrize("recompute_above", [0, 2**40])
@pytest.mark.parametrize("arch", ["llama", "gpt2"])
@pytest.mark.parametrize("chunk", [7, 1024])
def test_chunked_loss_and_gradients_match_the_plain_path(arch, chunk, recompute_above, monkeypatch):
    monkeypatch.setattr("annealscale.anneal.loss.RECOMPUTE_ABOVE_BYTES", recompute_above)
    model = _model(arch)
    batch = torch.randint(0, 97, (3, 21))
    inputs, targets = batch[:, :-1], batch[:, 1:]

    plain = _plain(model, inputs, targets)
    plain.backward()
    expected = {n: p.grad.clone() for n, p in model.named_parameters()}
    model.zero_grad()

    chunked = mean_token_nll(model, inputs, targets, chunk_tokens=chunk)
    chunked.backward()
    assert chunked.item() == pytest.approx(plain.item(), rel=1e-6)
    for name, param in model.named_parameters():
        torch.testing.assert_close(param.grad, expected[name], rtol=1e-5, atol=1e-7)


def test_per_token_losses_without_gradients_match_and_keep_no_graph():
    model = _model("llama")
    batch = torch.randint(0, 97, (2, 17))
    with torch.no_grad():
        nll = token_nll(model, batch[:, :-1], batch[:, 1:], chunk_tokens=5)  # (2, 16)
        logits = model(input_ids=batch[:, :-1]).logits
    assert nll.shape == (2, 16) and not nll.requires_grad
    expected = torch.nn.functional.cross_entropy(
        logits.reshape(-1, 97), batch[:, 1:].reshape(-1), reduction="none"
    ).reshape(2, 16)
    torch.testing.assert_close(nll, expected)


@pytest.mark.parametrize("arch", ["llama", "gpt2"])
def test_scoring_losses_and_greedy_tokens_match_the_full_logits(arch):
    """What lm-eval's loglikelihood requests need (loss per token, and whether each token is
    the model's greedy choice) comes out of the chunked path as from the full logits."""
    model = _model(arch)
    batch = torch.randint(0, 97, (2, 17))
    with torch.no_grad():
        nll, best = token_nll_and_argmax(model, batch[:, :-1], batch[:, 1:], chunk_tokens=5)
        logits = model(input_ids=batch[:, :-1]).logits.float()
    expected = torch.nn.functional.cross_entropy(
        logits.reshape(-1, 97), batch[:, 1:].reshape(-1), reduction="none"
    ).reshape(2, 16)
    torch.testing.assert_close(nll, expected)
    assert torch.equal(best, logits.argmax(-1))


def test_chunk_logits_are_not_kept_for_backward():
    """Recomputing (as for large logits), what autograd saves for the backward pass holds
    no (tokens, vocabulary) tensor: the chunks' logits are recomputed, not stored."""
    model = _model("llama")
    batch = torch.randint(0, 97, (2, 33))
    shapes = []

    def pack(tensor):
        shapes.append(tuple(tensor.shape))
        return tensor

    with (
        torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t),
        mock.patch("annealscale.anneal.loss.RECOMPUTE_ABOVE_BYTES", 0),
    ):
        LossModel(model)(batch[:, :-1], batch[:, 1:])
    assert shapes and not any(s[-1] == 97 and len(s) >= 2 and s[0] > 1 for s in shapes)
