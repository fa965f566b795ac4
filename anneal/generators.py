"""Generators for ``synthetic`` sources: the demo's programmatic ones and a Hugging Face
causal LM.

Document ``i`` of a generator depends only on ``(seed, i)``, never on which other
documents share its batch, so a larger spend extends the same sequence (nested pools).
For the causal LM this needs care: sampling is done by the Gumbel-max trick with noise
drawn from a generator seeded per document, on top of greedy decoding, so each row's
tokens follow its own random stream whatever the batch.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

import numpy as np

from annealscale.anneal.ngram_generator import generate as generate_ngram
from annealscale.anneal.synthetic_math import generate_math_document
from annealscale.core.errors import AnnealscaleError


def programmatic_document(params: Any, state: dict, index: int) -> str:
    """Document ``index`` of the ``math_worked_examples`` or ``ngram_lm`` generator."""
    if params.generator == "math_worked_examples":
        return generate_math_document(params.seed, index)
    fraction = params.worked_examples_fraction
    worked_every = round(1 / fraction) if fraction else 0
    if worked_every and index % worked_every == 0:
        return generate_math_document(params.seed, index)
    return generate_ngram(state["ngram"], params.seed, index)


def document_seed(seed: int, index: int) -> int:
    """A 60-bit seed for document ``index`` of generator ``seed``."""
    return int(hashlib.sha256(f"doc-{seed}-{index}".encode()).hexdigest()[:15], 16)


@dataclass(frozen=True)
class Generated:
    texts: list[str]
    new_tokens: list[int]
    """Tokens generated per document (the model's tokens, the final EOS included)."""
    flops: np.ndarray
    """Modelled forward FLOPs per document: prompt and generated tokens."""


class HfGenerator:
    """A causal LM from ``transformers`` that continues prompts in batches."""

    def __init__(self, path: str, *, device: str):
        from transformers import AutoModelForCausalLM, AutoTokenizer

        from annealscale.anneal.model import model_shape

        try:
            self.tokenizer = AutoTokenizer.from_pretrained(path, padding_side="left")
            self.model = AutoModelForCausalLM.from_pretrained(path)
        except (OSError, ValueError) as err:
            first = str(err).splitlines()[0]
            raise AnnealscaleError(
                f"{path}: cannot load a causal LM checkpoint ({first})"
            ) from None
        if self.tokenizer.eos_token_id is None:
            raise AnnealscaleError(f"{path}: tokenizer has no EOS token; generation cannot end")
        if self.tokenizer.pad_token_id is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        self.model.to(device).eval()
        self.device = device
        self.shape = model_shape(self.model)

    def generate(
        self,
        prompts: list[str],
        *,
        seeds: list[tuple[int, int]],
        max_new_tokens: int,
        temperature: float,
        top_k: int,
        top_p: float,
        do_sample: bool,
        keep_prompt: bool,
    ) -> Generated:
        import torch
        from transformers import GenerationConfig, LogitsProcessorList

        from annealscale.anneal.flops import forward_flops_per_token

        tok = self.tokenizer
        enc = tok(list(prompts), return_tensors="pt", padding=True).to(self.device)
        processors = LogitsProcessorList()
        if do_sample:
            processors.append(
                RowSeededSampler([document_seed(s, i) for s, i in seeds], temperature, top_k, top_p)
            )
        config = GenerationConfig(
            do_sample=False,  # sampling happens in RowSeededSampler (Gumbel-max)
            max_new_tokens=max_new_tokens,
            pad_token_id=tok.pad_token_id,
            eos_token_id=tok.eos_token_id,
        )
        with torch.inference_mode():
            out = self.model.generate(**enc, generation_config=config, logits_processor=processors)
        prompt_len = enc["input_ids"].shape[1]
        new = out[:, prompt_len:].cpu().numpy()  # (B, <= max_new_tokens)
        prompt_tokens = enc["attention_mask"].sum(dim=1).cpu().numpy()
        texts, counts, flops = [], [], []
        for row, prompt, n_prompt in zip(new, prompts, prompt_tokens, strict=True):
            ends = np.flatnonzero(row == tok.eos_token_id)
            n = int(ends[0]) + 1 if ends.size else len(row)
            text = tok.decode(row[: n - 1 if ends.size else n], skip_special_tokens=True)
            texts.append((prompt + text) if keep_prompt else text.strip())
            counts.append(n)
            total = int(n_prompt) + n
            flops.append(forward_flops_per_token(self.shape, total) * total)
        return Generated(texts=texts, new_tokens=counts, flops=np.asarray(flops))


class RowSeededSampler:
    """Logits processor: temperature, top-k and top-p, then Gumbel noise from one random
    stream per row, so that greedy decoding draws a sample (Gumbel-max trick; Gumbel
    1954, Maddison et al. 2014) that depends on the row's seed only."""

    def __init__(self, seeds: list[int], temperature: float, top_k: int, top_p: float):
        import torch

        self.generators = [torch.Generator().manual_seed(s) for s in seeds]
        self.temperature = temperature
        self.top_k = top_k
        self.top_p = top_p

    def __call__(self, input_ids, scores):
        import torch

        scores = scores.float() / self.temperature  # (B, V)
        if self.top_k:
            kth = torch.topk(scores, min(self.top_k, scores.shape[-1])).values[:, -1:]
            scores = scores.masked_fill(scores < kth, float("-inf"))
        if self.top_p < 1.0:
            ordered, order = torch.sort(scores, descending=True)
            mass = torch.softmax(ordered, dim=-1).cumsum(dim=-1)
            drop = mass - torch.softmax(ordered, dim=-1) >= self.top_p  # keep the first past p
            scores = scores.masked_fill(drop.scatter(1, order, drop), float("-inf"))
        uniform = torch.stack(
            [
                torch.rand(scores.shape[-1], generator=g, dtype=torch.float64)
                for g in self.generators
            ]
        ).clamp_(1e-12, 1 - 1e-12)
        gumbel = -torch.log(-torch.log(uniform)).to(scores.device, scores.dtype)
        return scores + gumbel
