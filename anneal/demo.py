"""``demo:`` paths: the offline demo's corpus splits and base model, built on first use.

A spec may name ``demo:base`` as its base model and ``demo:SPLIT`` (a split of
`anneal.demo_corpus`) as any data path. They resolve to cached files under the cache
directory (``$ANNEALSCALE_CACHE``, default ``~/.cache/annealscale``), built the first time
they are asked for. Every other path passes through unchanged.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

from annealscale.anneal.base_model import BaseModelConfig, build_base_model
from annealscale.anneal.demo_corpus import SPLITS, DemoCorpus, DemoCorpusConfig, build_demo_corpus
from annealscale.core.cache import default_cache_dir
from annealscale.core.errors import AnnealscaleError

log = logging.getLogger(__name__)

PREFIX = "demo:"


@dataclass
class DemoAssets:
    """Resolver for ``demo:`` paths; builds what is missing, once."""

    cache_dir: Path = field(default_factory=default_cache_dir)
    corpus_config: DemoCorpusConfig = field(default_factory=DemoCorpusConfig)
    base_config: BaseModelConfig = field(default_factory=BaseModelConfig)
    _corpus: DemoCorpus | None = None
    _base: Path | None = None

    @classmethod
    def tiny(cls, cache_dir: Path) -> DemoAssets:
        """A small real corpus and a tiny base model, built in seconds: for tests and
        benchmarks that need the whole pipeline but not the demo's scale."""
        return cls(
            cache_dir=Path(cache_dir),
            corpus_config=DemoCorpusConfig(
                math_packages=("mpmath", "sympy"),
                general_packages=("email", "logging", "http", "json", "importlib"),
                max_docs_per_package=300,
                seed_docs=60,
            ),
            base_config=BaseModelConfig(
                vocab_size=512,
                hidden_size=48,
                num_layers=2,
                num_heads=2,
                intermediate_size=96,
                max_positions=128,
                seq_len=64,
                batch_size=16,
                pretrain_tokens=60_000,
                tokenizer_sample_chars=300_000,
            ),
        )

    def corpus(self) -> DemoCorpus:
        if self._corpus is None:
            log.info("demo corpus: collecting docstrings of installed packages (cached)")
            self._corpus = build_demo_corpus(self.cache_dir, self.corpus_config)
        return self._corpus

    def base_model(self) -> Path:
        if self._base is None:
            general = str(self.corpus().split("general_train"))
            log.info("demo base model: pre-training on general text if not cached")
            self._base = build_base_model(general, self.cache_dir, self.base_config)
        return self._base

    def resolve(self, path: str) -> str:
        if not path.startswith(PREFIX):
            return path
        name = path[len(PREFIX) :]
        if name == "base":
            return str(self.base_model())
        if name in SPLITS:
            return str(self.corpus().split(name))
        known = ", ".join(("base", *SPLITS))
        raise AnnealscaleError(f"{path}: unknown demo asset; known: {known}")
