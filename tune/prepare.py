"""Everything a sweep does before the first anneal: resolve paths, curate pools, pack
data with Ray Data, measure the base model. The product is one `CellPlan` per cell.

Curation and packing are cached under the storage path by content, so a second sweep
over the same sources (or a resumed one) reuses them.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from anneal.config import content_hash
from anneal.documents import as_parquet
from anneal.evaluate import bits_per_byte, nll_and_bytes
from anneal.flops import eval_flops, flops_to_usd, train_flops
from anneal.loop import AnnealJob
from anneal.model import load_model, load_tokenizer, model_shape, token_byte_lengths
from anneal.packing import count_windows, pack_documents, read_windows
from anneal.sources import CurationContext, curate
from tune.cells import Cell, expand_grid
from tune.spec import ExperimentSpec

log = logging.getLogger(__name__)


@dataclass(frozen=True, kw_only=True)
class CellPlan:
    """One cell, ready to run: the worker's job, its datasets and its static row."""

    cell: Cell
    job: AnnealJob
    domain_dir: str
    replay_dir: str
    replay_rows: int
    """Replay windows the anneal consumes; the replay read stops there."""
    row: dict
    """Columns known before training: source, spend, pool and cost ledger."""


@dataclass(frozen=True, kw_only=True)
class SweepPlan:
    cells: list[CellPlan]
    base_domain_bpb: float
    base_general_bpb: float
    model_path: str
    non_embedding_params: int


def prepare(
    spec: ExperimentSpec,
    *,
    resolve: Callable[[str], str],
    storage: Path,
    threads: int,
    cells: list[Cell] | None = None,
) -> SweepPlan:
    """Curate, pack and plan every cell of ``spec`` (or just ``cells``)."""
    cells = expand_grid(spec) if cells is None else cells
    storage = Path(storage)
    cache = storage / "cache"
    model_path = resolve(spec.base_model.path)
    tokenizer = load_tokenizer(model_path, trust_remote_code=spec.base_model.trust_remote_code)
    seq_len = spec.train.seq_len

    token_bytes = token_byte_lengths(model_path)
    token_bytes_path = cache / f"token-bytes-{content_hash(token_bytes.tolist())}.npy"
    token_bytes_path.parent.mkdir(parents=True, exist_ok=True)
    np.save(token_bytes_path, token_bytes)

    def packed(path: str, text_field: str) -> str:
        docs = as_parquet(resolve(path), text_field, cache)
        return str(
            pack_documents(
                docs, tokenizer_path=model_path, seq_len=seq_len, cache_dir=cache, text_field="text"
            )
        )

    log.info("packing replay and evaluation data (Ray Data)")
    replay_dir = packed(spec.replay.path, spec.replay.text_field)
    eval_dirs = {
        "domain": packed(spec.eval.domain.path, spec.eval.domain.text_field),
        "general": packed(spec.eval.general.path, spec.eval.general.text_field),
    }
    eval_windows = max(1, spec.eval.max_tokens // seq_len)

    model = load_model(model_path, trust_remote_code=spec.base_model.trust_remote_code)
    shape = model_shape(model)
    base = {}
    import torch

    torch.set_num_threads(threads)
    for name, path in eval_dirs.items():
        windows = read_windows(Path(path), eval_windows)
        base[name] = bits_per_byte(*nll_and_bytes(model, windows, token_bytes))
    log.info("base model: domain %.4f bpb, general %.4f bpb", base["domain"], base["general"])
    del model

    ctx = CurationContext(
        tokenizer=tokenizer, resolve=resolve, cache_dir=cache / model_key(model_path)
    )
    sources = {s.name: s for s in spec.sources}
    pools: dict[tuple[str, float], tuple] = {}
    for cell in cells:
        key = (cell.source, cell.curation_spend)
        if key not in pools:
            log.info("curating %s at %g USD", cell.source, cell.curation_spend)
            pool = curate(sources[cell.source], cell.curation_spend, ctx)
            pool_dir = pack_documents(
                str(pool.path), tokenizer_path=model_path, seq_len=seq_len, cache_dir=cache
            )
            pools[key] = (pool, str(pool_dir), count_windows(pool_dir))

    plans = []
    per_step = spec.train.tokens_per_step
    for cell in cells:
        pool, pool_dir, pool_windows = pools[(cell.source, cell.curation_spend)]
        steps = cell.train_tokens // per_step
        tokens = steps * per_step
        job = AnnealJob(
            model_path=model_path,
            trust_remote_code=spec.base_model.trust_remote_code,
            train=spec.train,
            schedule=spec.schedule,
            steps=steps,
            domain_fraction=spec.domain_fraction,
            domain_pool_windows=pool_windows,
            domain_eval_dir=eval_dirs["domain"],
            general_eval_dir=eval_dirs["general"],
            eval_windows=eval_windows,
            token_bytes_path=str(token_bytes_path),
            seed=cell.seed,
            num_workers=spec.resources.num_workers,
            threads_per_worker=spec.resources.cpus_per_worker,
        )
        t_flops = train_flops(shape, tokens, seq_len)
        e_flops = 2 * eval_flops(shape, eval_windows * seq_len, seq_len)
        train_cost = flops_to_usd(t_flops + e_flops, spec.prices.usd_per_pflop)
        row = {
            "cell_id": cell.identity,
            "source": cell.source,
            "source_identity": cell.source_identity,
            "curation_spend": cell.curation_spend,
            "requested_train_tokens": cell.train_tokens,
            "train_tokens": tokens,
            "seed": cell.seed,
            "unique_tokens": pool_windows * seq_len,
            "pool_documents": pool.documents,
            **{k: float(v) for k, v in pool.ledger().items()},
            "repetition": spec.domain_fraction * tokens / max(pool_windows * seq_len, 1),
            "train_flops": t_flops,
            "eval_flops": e_flops,
            "train_cost": train_cost,
            "total_cost": pool.cost_usd + train_cost,
            "base_domain_bpb": base["domain"],
            "base_general_bpb": base["general"],
        }
        plans.append(
            CellPlan(
                cell=cell,
                job=job,
                domain_dir=pool_dir,
                replay_dir=replay_dir,
                # one batch of slack: workers' shares of a split need not be equal
                replay_rows=steps * spec.train.batch_size
                - round_half_up(spec.domain_fraction * steps * spec.train.batch_size)
                + spec.train.batch_size,
                row=row,
            )
        )
    return SweepPlan(
        cells=plans,
        base_domain_bpb=base["domain"],
        base_general_bpb=base["general"],
        model_path=model_path,
        non_embedding_params=shape.non_embedding_params,
    )


def round_half_up(x: float) -> int:
    return int(math.floor(x + 0.5))


def model_key(model_path: str) -> str:
    """Pools are counted in the base tokenizer's tokens, so their cache is per model."""
    return "model-" + content_hash(model_path)
