"""Token and FLOP accounting for decoder-only transformers, in one place.

All counts are per token processed unless the name says otherwise. Formulas follow
Kaplan et al. 2020 (table 1): the forward pass costs ``2 N + 2 n_layer n_ctx d_model``
FLOPs per token with ``N`` the non-embedding parameters; the backward pass costs twice
the forward, so training costs three times the forward.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, kw_only=True)
class ModelShape:
    """What the FLOP formulas need to know about a model."""

    non_embedding_params: int
    """Parameters excluding the token embedding and the output projection (count)."""
    n_layer: int
    d_model: int
    vocab_size: int = 0
    """Output vocabulary (tokens); the de-embedding matmul costs ``2 d_model V`` per token."""


def forward_flops_per_token(shape: ModelShape, context: int) -> float:
    """Forward FLOPs per token at context length ``context`` (tokens).

    Kaplan et al.'s ``2 N + 2 n_layer n_ctx d_model`` plus the de-embedding
    ``2 d_model V`` that their table 1 lists separately: it is counted whether or not the
    output projection shares its weights with the input embedding, so tied and untied
    models of the same shape cost the same.
    """
    return (
        2.0 * shape.non_embedding_params
        + 2.0 * shape.n_layer * context * shape.d_model
        + 2.0 * shape.d_model * shape.vocab_size
    )


def train_flops(shape: ModelShape, tokens: int, context: int) -> float:
    """Training FLOPs for ``tokens`` tokens: forward plus a backward of twice the forward."""
    return 3.0 * forward_flops_per_token(shape, context) * tokens


def eval_flops(shape: ModelShape, tokens: int, context: int) -> float:
    """Evaluation FLOPs for ``tokens`` tokens (forward only)."""
    return forward_flops_per_token(shape, context) * tokens
