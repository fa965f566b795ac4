"""Next-token loss that never holds the whole ``(tokens, vocabulary)`` logits at once.

At a 128k vocabulary, 4096-token sequences and micro-batch 4, full fp32 logits are about
8 GB before their gradient. Here the model's body runs once to its final hidden states and
the output projection runs over chunks of tokens: each chunk's logits are upcast to fp32,
reduced to one loss per token and dropped. In training each chunk is wrapped in
`torch.utils.checkpoint` (once the full logits would be large, `RECOMPUTE_ABOVE_BYTES`), so
its logits are recomputed during the backward pass instead of kept: one chunk's logits
(and their gradient) are alive at a time. The output projection is
called as a module, so DeepSpeed ZeRO-3 gathers its partitioned weight on every call like
for any other layer.

Models whose logits are not a plain projection of the last hidden state (logit soft-capping
or scaling, as in Gemma 2 and Cohere), and modules that are not Hugging Face causal LMs,
take the plain path: full logits, upcast to fp32 per chunk.
"""

from __future__ import annotations

import torch
from torch.utils.checkpoint import checkpoint as recompute

CHUNK_TOKENS = 1024
"""Tokens per chunk (also `anneal.memory_plan.LOSS_CHUNK_TOKENS`)."""

RECOMPUTE_ABOVE_BYTES = 32 * 2**20
"""Recompute chunks' logits in the backward pass only when a micro-batch's full fp32 logits
would exceed this (bytes): below it keeping them costs little memory, and the recompute
(one more output projection per token) would cost a small model with a large vocabulary
a tenth of its step time."""

_LOGIT_TRANSFORMS = ("final_logit_softcapping", "logit_scale", "output_multiplier_scale")


def token_nll(model, input_ids, targets, *, chunk_tokens: int = CHUNK_TOKENS):
    """Next-token loss (nats, fp32) of every position: ``(B, T)`` from ``input_ids`` and
    ``targets``, both ``(B, T)``. Differentiable when gradients are enabled."""
    head, features = _head_and_features(model, input_ids)
    if head is None:
        return _chunked(lambda x: x, features, targets, chunk_tokens, checkpoint=False)
    full_logits_bytes = targets.numel() * head.weight.shape[0] * 4
    recompute = torch.is_grad_enabled() and full_logits_bytes > RECOMPUTE_ABOVE_BYTES
    return _chunked(head, features, targets, chunk_tokens, checkpoint=recompute)


def token_nll_and_argmax(model, input_ids, targets, *, chunk_tokens: int = CHUNK_TOKENS):
    """`token_nll` and the most likely next token at every position, both ``(B, T)``, for
    scoring without gradients (lm-eval's loglikelihood requests report whether a
    continuation is the greedy one); one chunk's logits alive at a time."""
    head, features = _head_and_features(model, input_ids)
    head = head if head is not None else (lambda x: x)
    flat = features.reshape(-1, features.size(-1))
    flat_targets = targets.reshape(-1)
    nll, best = [], []
    for start in range(0, flat.size(0), chunk_tokens):
        logits = head(flat[start : start + chunk_tokens]).float()  # (chunk, V)
        chunk_targets = flat_targets[start : start + chunk_tokens]
        nll.append(torch.nn.functional.cross_entropy(logits, chunk_targets, reduction="none"))
        best.append(logits.argmax(-1))
    return torch.cat(nll).reshape(targets.shape), torch.cat(best).reshape(targets.shape)


def _head_and_features(model, input_ids):
    """The output projection and the final hidden states it applies to, or ``None`` and
    the full logits for models whose logits are not a plain projection."""
    head = getattr(model, "get_output_embeddings", lambda: None)()
    if head is None or _transforms_logits(getattr(model, "config", None)):
        return None, model(input_ids=input_ids).logits  # (B, T, V)
    return head, model.base_model(input_ids=input_ids).last_hidden_state  # (B, T, d)


def mean_token_nll(model, input_ids, targets, *, chunk_tokens: int = CHUNK_TOKENS):
    """Mean next-token loss over all positions (the training objective)."""
    return token_nll(model, input_ids, targets, chunk_tokens=chunk_tokens).mean()


class LossModel(torch.nn.Module):
    """A causal LM that returns its mean chunked loss when called with ``input_ids`` and
    ``targets``. DeepSpeed wraps this, so its forward (and ZeRO-3's hooks on the root
    module) runs around the whole loss; the Hugging Face model is ``.lm``."""

    def __init__(self, lm):
        super().__init__()
        self.lm = lm

    def forward(self, input_ids, targets):
        return mean_token_nll(self.lm, input_ids, targets)


def _chunked(head, features, targets, chunk_tokens: int, *, checkpoint: bool):
    flat = features.reshape(-1, features.size(-1))  # (B*T, d) or (B*T, V)
    flat_targets = targets.reshape(-1)  # (B*T,)
    parts = []
    for start in range(0, flat.size(0), chunk_tokens):
        chunk = flat[start : start + chunk_tokens]
        chunk_targets = flat_targets[start : start + chunk_tokens]
        if checkpoint:
            parts.append(recompute(_chunk_nll, head, chunk, chunk_targets, use_reentrant=False))
        else:
            parts.append(_chunk_nll(head, chunk, chunk_targets))
    return torch.cat(parts).reshape(targets.shape)


def _chunk_nll(head, chunk, targets):
    logits = head(chunk).float()  # (chunk, V)
    return torch.nn.functional.cross_entropy(logits, targets, reduction="none")


def _transforms_logits(config) -> bool:
    if config is None:
        return True
    text = getattr(config, "text_config", None) or config
    return any(getattr(text, name, None) not in (None, 1.0) for name in _LOGIT_TRANSFORMS)
