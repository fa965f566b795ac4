"""Loading a causal LM and its tokenizer: a local directory or a hub id, one code path.

The demo's base model is saved with ``save_pretrained`` and loaded here exactly as a
user's checkpoint would be, so nothing downstream knows it is the demo.
"""

from __future__ import annotations

import functools
import os
import re
from pathlib import Path

import numpy as np

from annealscale.anneal.flops import ModelShape
from annealscale.core.errors import AnnealscaleError


def load_tokenizer(path: str, *, trust_remote_code: bool = False):
    """The tokenizer at ``path``, with a pad token (the EOS token when it has none)."""
    from transformers import AutoTokenizer

    tokenizer = _from_pretrained(AutoTokenizer, path, trust_remote_code)
    if tokenizer.eos_token_id is None:
        raise AnnealscaleError(
            f"base_model.path: tokenizer at '{path}' has no EOS token; documents cannot be "
            "separated when packing. Set eos_token in its tokenizer_config.json"
        )
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def checkpoint_location(path: str) -> str:
    """Where every process finds the checkpoint at ``path``: a local one as an absolute
    path (Ray Tune trials and Train workers run in directories of their own, where a
    relative path names nothing), a hub id unchanged."""
    local = Path(path).expanduser()
    return os.path.abspath(local) if local.exists() else path


def load_model(path: str, *, trust_remote_code: bool = False, dtype=None):
    """The causal LM at ``path`` (``AutoModelForCausalLM``)."""
    from transformers import AutoModelForCausalLM

    kwargs = {"dtype": dtype} if dtype is not None else {}
    return _from_pretrained(AutoModelForCausalLM, path, trust_remote_code, **kwargs)


def load_model_config(path: str, trust_remote_code: bool = False):
    """The model's configuration alone (no weights), for checks before any compute."""
    from transformers import AutoConfig

    return _from_pretrained(AutoConfig, path, trust_remote_code)


def model_shape(model) -> ModelShape:
    """Non-embedding parameter count and the sizes the FLOP formulas use."""
    embedding_ids = {id(p) for m in model.modules() if _is_embedding(m) for p in m.parameters()}
    output = model.get_output_embeddings()
    if output is not None:
        embedding_ids |= {id(p) for p in output.parameters()}
    non_embedding = sum(p.numel() for p in model.parameters() if id(p) not in embedding_ids)
    config = model.config
    n_layer = getattr(config, "num_hidden_layers", None) or config.n_layer
    d_model = getattr(config, "hidden_size", None) or config.n_embd
    return ModelShape(
        non_embedding_params=int(non_embedding),
        n_layer=n_layer,
        d_model=d_model,
        vocab_size=int(config.vocab_size),
    )


@functools.lru_cache(maxsize=8)
def token_byte_lengths(tokenizer_path: str, trust_remote_code: bool = False) -> np.ndarray:
    """UTF-8 bytes each token id stands for; special tokens count zero.

    Bits per byte divides the summed loss by the bytes of the text predicted, which makes
    models with different tokenizers comparable. Special tokens (EOS between documents)
    stand for no text, so their predictions are left out of both sums. Tokens are
    measured from their vocabulary strings, not by decoding them one at a time: a token
    holding part of a multi-byte character decodes to U+FFFD (3 bytes) alone.
    """
    tokenizer = load_tokenizer(tokenizer_path, trust_remote_code=trust_remote_code)
    special = set(tokenizer.all_special_ids)
    measure = _byte_level_length if _is_byte_level(tokenizer) else _sentencepiece_length
    lengths = np.zeros(len(tokenizer), dtype=np.int64)
    for token_id, piece in enumerate(tokenizer.convert_ids_to_tokens(list(range(len(tokenizer))))):
        if token_id not in special and piece is not None:
            lengths[token_id] = measure(piece)
    return lengths


_SP_BYTE = re.compile(r"<0x[0-9A-Fa-f]{2}>")


def _is_byte_level(tokenizer) -> bool:
    """GPT-2-style byte-level BPE: each vocabulary character stands for one byte."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    decoder = getattr(backend, "decoder", None)
    return decoder is not None and "ByteLevel" in repr(decoder)


def _byte_level_length(piece: str) -> int:
    return len(piece)


def _sentencepiece_length(piece: str) -> int:
    if _SP_BYTE.fullmatch(piece):
        return 1  # byte-fallback token
    return len(piece.replace("\u2581", " ").encode("utf-8"))


def _is_embedding(module) -> bool:
    import torch

    return isinstance(module, torch.nn.Embedding)


def _from_pretrained(auto_cls, path: str, trust_remote_code: bool, **kwargs):
    local = Path(path).expanduser()
    looks_local = local.exists() or path.startswith((".", "/", "~"))
    if looks_local and not local.is_dir():
        raise AnnealscaleError(
            f"base_model.path: '{path}' does not exist; give a directory saved with "
            "save_pretrained or a Hugging Face hub id"
        )
    try:
        return auto_cls.from_pretrained(
            str(local) if looks_local else path, trust_remote_code=trust_remote_code, **kwargs
        )
    except OSError as err:
        offline = os.environ.get("HF_HUB_OFFLINE") == "1"
        hint = (
            " (HF_HUB_OFFLINE=1: only local directories and cached models load)" if offline else ""
        )
        raise AnnealscaleError(
            f"base_model.path: cannot load '{path}'{hint}: {str(err).splitlines()[0]}"
        ) from None
