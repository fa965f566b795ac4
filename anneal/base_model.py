"""The demo's tiny base model: a byte-level BPE tokenizer and a Llama-style model,
pre-trained by the project on the general pool and saved with ``save_pretrained``.

`annealscale base` builds it once and caches it by the hash of its config and the
corpus it was trained on; anneals then load it through `anneal.model` like any Hugging
Face checkpoint. Pre-training runs in-process with plain PyTorch: it is a one-off step
that precedes the experiment, not part of what the sweep measures.

The build holds the entry's lock (`anneal.cache_lock`), so two demos started at once
pre-train once; it saves its state every `CHECKPOINT_SECONDS` into the build folder, so a
killed pre-training continues from its last state instead of step 0.
"""

from __future__ import annotations

import json
import logging
import math
import os
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from annealscale.anneal.cache_lock import building, temp_dir
from annealscale.anneal.documents import read_texts
from annealscale.anneal.schedule import linear_decay_lr, warmup_steps_for
from annealscale.core.hashing import content_hash

log = logging.getLogger(__name__)

EOS = "<|endoftext|>"
CHECKPOINT_SECONDS = 20.0
"""Pre-training saves its state at most this often (and at ``checkpoint_steps``)."""
STATE = "pretrain-state.pt"


@dataclass(frozen=True, kw_only=True)
class BaseModelConfig:
    """Size and pre-training budget of the demo base model."""

    vocab_size: int = 2048
    """BPE vocabulary including the byte alphabet and EOS (tokens)."""
    hidden_size: int = 128
    num_layers: int = 4
    num_heads: int = 4
    intermediate_size: int = 384
    max_positions: int = 512
    """Longest context the model accepts (tokens)."""
    seq_len: int = 128
    """Pre-training context (tokens)."""
    batch_size: int = 32
    """Sequences per optimizer step."""
    pretrain_tokens: int = 1_500_000
    """Tokens of general text seen in pre-training."""
    peak_lr: float = 3e-3
    tokenizer_sample_chars: int = 4_000_000
    """Characters of general text used to learn the BPE merges."""
    seed: int = 0


def build_base_model(
    general_docs: str,
    cache_dir: Path,
    config: BaseModelConfig,
    *,
    checkpoint_steps: int | None = None,
) -> Path:
    """Train tokenizer and model on ``general_docs`` unless cached; return the model dir.

    ``checkpoint_steps``: also save the pre-training state every this many steps."""
    from annealscale.anneal.documents import files_identity

    key = content_hash({"config": asdict(config), "docs": files_identity(general_docs)})
    out = Path(cache_dir) / f"base-{key}"
    if (out / "annealscale_base.json").exists():
        return out
    with building(out):
        if not (out / "annealscale_base.json").exists():
            _build(general_docs, out, config, checkpoint_steps)
    return out


def _build(general_docs: str, out: Path, config: BaseModelConfig, checkpoint_steps) -> None:
    import torch
    from transformers import PreTrainedTokenizerFast

    torch.manual_seed(config.seed)
    started = time.time()
    texts = read_texts(general_docs)
    # a folder holding pre-training state is an interrupted build to continue
    tmp = temp_dir(out, keep=(out.with_name(out.name + ".tmp") / STATE).exists())
    if (tmp / STATE).exists() and (tmp / "tokenizer.json").exists():
        tokenizer = PreTrainedTokenizerFast.from_pretrained(tmp)
    else:
        tokenizer = train_tokenizer(texts, config)
        tokenizer.save_pretrained(tmp)
    model = _init_model(config, tokenizer)
    n_params = sum(p.numel() for p in model.parameters())
    log.info(
        "base model: %.2fM parameters, pre-training on %d tokens",
        n_params / 1e6,
        config.pretrain_tokens,
    )
    windows = _windows(texts, tokenizer, config)
    final_loss, resumed = _pretrain(model, windows, config, tmp / STATE, checkpoint_steps)
    model.save_pretrained(tmp)
    (tmp / STATE).unlink(missing_ok=True)
    meta = {
        "config": asdict(config),
        "parameters": n_params,
        "pretrain_windows_available": int(len(windows)),
        "final_train_loss": final_loss,
        "resumed_from_step": resumed,
        "seconds": round(time.time() - started, 1),
    }
    (tmp / "annealscale_base.json").write_text(json.dumps(meta, indent=2))
    if out.exists():  # a folder without its metadata: an interrupted build of old code
        shutil.rmtree(out)
    os.replace(tmp, out)


def train_tokenizer(texts: list[str], config: BaseModelConfig):
    """Byte-level BPE learned on a prefix of ``texts``; EOS doubles as BOS and padding."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    sample, total = [], 0
    for text in texts:
        sample.append(text)
        total += len(text)
        if total >= config.tokenizer_sample_chars:
            break
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=config.vocab_size,
        special_tokens=[EOS],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(sample, trainer=trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, eos_token=EOS, bos_token=EOS, pad_token=EOS, unk_token=None
    )


def _init_model(config: BaseModelConfig, tokenizer):
    from transformers import LlamaConfig, LlamaForCausalLM

    llama = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=config.hidden_size,
        num_hidden_layers=config.num_layers,
        num_attention_heads=config.num_heads,
        num_key_value_heads=config.num_heads,
        intermediate_size=config.intermediate_size,
        max_position_embeddings=config.max_positions,
        eos_token_id=tokenizer.eos_token_id,
        bos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=True,
    )
    return LlamaForCausalLM(llama)


def _windows(texts: list[str], tokenizer, config: BaseModelConfig) -> np.ndarray:
    from annealscale.anneal.packing import pack_token_lists

    needed = math.ceil(config.pretrain_tokens / config.seq_len)
    ids: list[list[int]] = []
    tokens = 0
    for start in range(0, len(texts), 512):
        chunk = tokenizer(texts[start : start + 512], add_special_tokens=False)["input_ids"]
        ids.extend(chunk)
        tokens += sum(len(t) + 1 for t in chunk)
        if tokens >= needed * (config.seq_len + 1):
            break
    return pack_token_lists(ids, tokenizer.eos_token_id, config.seq_len)


def _pretrain(
    model, windows: np.ndarray, config: BaseModelConfig, state_path: Path, checkpoint_steps
) -> tuple[float, int]:
    """Pre-train ``model``, continuing from ``state_path`` when it exists and saving there
    as it goes; returns the final loss and the step it resumed from (0: a fresh start)."""
    import torch

    steps = max(1, config.pretrain_tokens // (config.batch_size * config.seq_len))
    warmup = warmup_steps_for(steps, 0.05)
    optimizer = torch.optim.AdamW(
        model.parameters(), lr=config.peak_lr, weight_decay=0.1, betas=(0.9, 0.95)
    )
    rng = np.random.default_rng(config.seed)
    order = rng.permutation(len(windows))
    model.train()
    loss_value = float("nan")
    start = 0
    if state_path.exists():
        state = torch.load(state_path, weights_only=False)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        torch.set_rng_state(state["rng"])
        start, loss_value = state["step"], state["loss"]
        log.info("base model: continuing an interrupted pre-training at step %d", start)
    last_log = last_save = time.time()
    for step in range(start, steps):
        rows = order[
            np.arange(step * config.batch_size, (step + 1) * config.batch_size) % len(order)
        ]
        batch = torch.as_tensor(windows[rows]).long()  # (B, T+1)
        for group in optimizer.param_groups:
            group["lr"] = linear_decay_lr(step, steps, peak_lr=config.peak_lr, warmup_steps=warmup)
        logits = model(input_ids=batch[:, :-1]).logits  # (B, T, V)
        loss = torch.nn.functional.cross_entropy(
            logits.reshape(-1, logits.size(-1)), batch[:, 1:].reshape(-1)
        )
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        loss_value = float(loss.detach())
        if time.time() - last_log > 15 or step == steps - 1:
            log.info("base model: step %d/%d loss %.3f", step + 1, steps, loss_value)
            last_log = time.time()
        due = checkpoint_steps and (step + 1) % checkpoint_steps == 0
        if (due or time.time() - last_save > CHECKPOINT_SECONDS) and step + 1 < steps:
            state = {
                "model": model.state_dict(),
                "optimizer": optimizer.state_dict(),
                "rng": torch.get_rng_state(),
                "step": step + 1,
                "loss": loss_value,
            }
            partial = state_path.with_name(state_path.name + ".partial")
            torch.save(state, partial)
            os.replace(partial, state_path)  # a kill mid-save leaves the previous state
            last_save = time.time()
    return loss_value, start
