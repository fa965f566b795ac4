"""Curation runs: buying a spend of a source as Ray Data jobs, with a measured ledger.

For each source (its identity and the identity of its input files) the candidates judged
so far are kept as Parquet shards under ``pools/<kind>-<hash>/stream/``, one shard per
round, in stream order. Buying spend ``c`` reads that stream, judges more candidates
only when the stream does not yet reach ``c`` (a Ray Data ``map_batches`` job on an actor
pool, continuing where the last run stopped; a round of at most `IN_PROCESS_CANDIDATES`
CPU candidates is judged in this process instead), and cuts it where the running cost would
first exceed ``c``. A pool at a larger spend therefore contains every document of a
smaller one in the same order, and growing a pool judges only the extra candidates.

Every judged candidate carries its price (USD), modelled FLOPs, measured device-seconds
(CPU-seconds of the actor process on CPU, wall-seconds times GPUs on GPU) and tokens; a
pool's ledger sums them over the candidates it bought, plus the source's one-off setup.
"""

from __future__ import annotations

import json
import logging
import math
import os
import pickle
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from annealscale.anneal.documents import ReadReport
from annealscale.anneal.sources import (
    SOURCE_KINDS,
    STEP_KINDS,
    CurationContext,
    CurationResources,
    CurationStep,
    Setup,
    SourceKind,
    SourceSpec,
    token_counter,
)
from annealscale.core.errors import AnnealscaleError
from annealscale.core.hashing import content_hash

log = logging.getLogger(__name__)

MAX_DEFAULT_ACTORS = 8
IN_PROCESS_CANDIDATES = 8192
"""Curation rounds of at most this many CPU candidates are judged in the calling process:
cheaper than starting and stopping a Ray Data actor pool (as packing does for small
inputs, `anneal.packing.IN_PROCESS_BYTES`). The quick demo's 5,000 ``web_filtered``
candidates took 3 s here against 14 s on a Ray Data pool, idle 2-core machine."""


@dataclass(frozen=True, kw_only=True)
class CuratedPool:
    """Documents bought for one (source, spend), with the measured cost ledger."""

    path: Path
    """Parquet file of the kept documents (column ``text``), in purchase order."""
    documents: int
    """Documents kept."""
    tokens: int
    """Tokens of the kept documents by the base tokenizer, EOS separators included."""
    candidates_processed: int
    """Candidates the spend paid for (documents scored, generated or bought)."""
    tokens_processed: int
    """Base-tokenizer tokens of those candidates."""
    cost_usd: float
    """Money spent (USD, at most the spend): setup plus the candidates' prices."""
    flops: float
    """Modelled compute of curation (FLOPs), setup included."""
    seconds: float
    """Measured device-seconds of curation, setup included."""
    skipped_records: int = 0
    """Input records skipped as invalid UTF-8 (see `anneal.documents`)."""
    empty_files: int = 0
    """Empty input shards skipped."""
    run_docs_processed: int = 0
    """Candidates judged by the run that built this pool (0 when served from cache)."""
    run_tokens_processed: int = 0
    run_device_seconds: float = 0.0

    def ledger(self) -> dict[str, float]:
        """The ``curation_*`` columns of a cell's row."""
        return {
            "curation_cost": self.cost_usd,
            "curation_flops": self.flops,
            "curation_device_seconds": self.seconds,
            "curation_documents": self.documents,
            "curation_docs_processed": self.candidates_processed,
            "curation_tokens_processed": self.tokens_processed,
            "curation_skipped_records": self.skipped_records,
            "curation_empty_files": self.empty_files,
            "curation_run_docs_processed": self.run_docs_processed,
        }


def source_dir(source: SourceSpec, ctx: CurationContext, inputs: str = "") -> Path:
    """Where a source's stream, setup and pools are cached."""
    key = content_hash([source.identity, inputs])
    return Path(ctx.cache_dir) / "pools" / f"{source.kind}-{key}"


def curate(
    source: SourceSpec,
    spend: float,
    ctx: CurationContext,
    *,
    inputs: str = "",
    in_process_candidates: int = IN_PROCESS_CANDIDATES,
) -> CuratedPool:
    """Buy ``spend`` USD of ``source``; cached under the source identity, the identity of
    its input files (``inputs``) and the spend. Rounds of at most ``in_process_candidates``
    candidates on CPU are judged in this process, larger ones (or on GPU) by Ray Data."""
    root = source_dir(source, ctx, inputs)
    stem = f"spend-{float(spend)!r}"  # exact: nearby spends must not share a pool
    meta_path = root / f"{stem}.json"
    if meta_path.exists():
        meta = json.loads(meta_path.read_text())
        meta.update(run_docs_processed=0, run_tokens_processed=0, run_device_seconds=0.0)
        return CuratedPool(path=root / f"{stem}.parquet", **meta)

    kind = SOURCE_KINDS[source.kind](source.params, ctx)
    steps = [STEP_KINDS[s.kind](s.params, f"step{i}_{s.kind}") for i, s in enumerate(source.steps)]
    setup, setup_seconds = _setup(kind, root)
    stream = _Stream(root / "stream")
    price = kind.price_per_candidate()
    if any(s.charges_usd for s in steps):
        price = None
    run = {"docs": 0, "tokens": 0, "seconds": 0.0}
    while True:
        rows = stream.load()
        costs = _column(rows, "cost_usd")
        cut, certain = cut_point(costs, setup.usd, spend, next_price=price, ended=stream.ended)
        if certain:
            break
        remaining = spend - setup.usd - float(costs.sum())
        start = len(costs)
        count = _round_size(remaining, costs, price, ctx.min_round)
        offered = kind.offers(start, start + count)
        offered_rows = len(next(iter(offered.values()))) if offered else 0
        if offered_rows:
            judged = _judge_round(
                kind, steps, setup, offered, start, source, ctx, in_process_candidates
            )
            judged = _sequential(steps, judged, rows)
            stream.append(start, judged)
            if price is None and float(_column(judged, "cost_usd").sum()) <= 0:
                raise AnnealscaleError(
                    f"source '{source.name}': candidates {start} to {start + offered_rows} "
                    "cost nothing, so no spend can bound the pool; give the source a price"
                )
            run["docs"] += judged.num_rows
            run["tokens"] += int(_column(judged, "tokens").sum())
            run["seconds"] += float(_column(judged, "seconds").sum())
        if offered_rows < count:
            stream.mark_end(start + offered_rows)
        _save_report(root, kind.report)

    bought = rows.slice(0, cut) if rows is not None else None
    kept = _kept_texts(bought)
    if not kept:
        raise AnnealscaleError(
            f"source '{source.name}': spend {spend:g} USD keeps no documents "
            f"({cut} processed); raise the spend or loosen the filter"
        )
    report = _load_report(root)
    kept_tokens = _column(bought, "tokens")[_column(bought, "kept").astype(bool)]
    meta = {
        "documents": len(kept),
        "tokens": int(kept_tokens.sum() + len(kept)),
        "candidates_processed": cut,
        "tokens_processed": int(_column(bought, "tokens").sum()),
        "cost_usd": setup.usd + float(_column(bought, "cost_usd").sum()),
        "flops": setup.flops + float(_column(bought, "flops").sum()),
        "seconds": setup_seconds + float(_column(bought, "seconds").sum()),
        "skipped_records": sum(report.get("invalid_utf8", {}).values()),
        "empty_files": len(report.get("empty_files", [])),
    }
    unique = uuid.uuid4().hex
    tmp = root / f".{stem}.{unique}.parquet.tmp"
    pq.write_table(pa.table({"text": kept}), tmp)
    os.replace(tmp, root / f"{stem}.parquet")
    _write_json(meta_path, meta)  # the marker appears only after the pool is complete
    if meta["skipped_records"] or meta["empty_files"]:
        log.warning(
            "source '%s': inputs had %d record(s) skipped as invalid UTF-8 and %d empty "
            "shard(s) skipped (details in %s)",
            source.name,
            meta["skipped_records"],
            meta["empty_files"],
            root / "inputs_report.json",
        )
    log.info(
        "source '%s' at %g USD: %d documents kept of %d processed (%d judged in this run)",
        source.name,
        spend,
        len(kept),
        cut,
        run["docs"],
    )
    return CuratedPool(
        path=root / f"{stem}.parquet",
        **meta,
        run_docs_processed=run["docs"],
        run_tokens_processed=run["tokens"],
        run_device_seconds=run["seconds"],
    )


def cut_point(
    costs: np.ndarray, setup_usd: float, spend: float, *, next_price: float | None, ended: bool
) -> tuple[int, bool]:
    """How many candidates of the judged stream ``spend`` buys, and whether that is
    final: the running cost (setup first) stays within ``spend`` for exactly that many.
    Final when a later candidate would overrun, when the stream has ended, or when the
    next candidate's known price would overrun."""
    running = setup_usd + np.cumsum(costs, dtype=np.float64) if len(costs) else np.zeros(0)
    if setup_usd > spend:
        return 0, True
    k = int(np.searchsorted(running, spend, side="right"))
    if k < len(costs) or ended:
        return k, True
    spent = float(running[-1]) if len(costs) else setup_usd
    if next_price is not None and spent + next_price > spend:
        return k, True
    return k, False


def _round_size(remaining: float, costs: np.ndarray, price: float | None, min_round: int) -> int:
    """Candidates to judge next: exactly what a known price buys, else an estimate from
    the mean cost so far (5% over, to finish in one round most of the time)."""
    if price is not None:
        return max(1, int(math.floor(remaining / price * (1 + 1e-12))))
    total = float(costs.sum())
    if len(costs) == 0 or total <= 0:
        return min_round
    return max(min_round, int(math.ceil(1.05 * remaining / (total / len(costs)))) + 1)


# --- setup -------------------------------------------------------------------------------


def _setup(kind: SourceKind, root: Path) -> tuple[Setup, float]:
    """The kind's setup, computed once per source and cached (its cost is recorded the
    first time and charged to every pool)."""
    state_path, meta_path = root / "setup.pkl", root / "setup.json"
    if meta_path.exists():
        meta = json.loads(meta_path.read_text())
        with open(state_path, "rb") as handle:
            state = pickle.load(handle)
        return Setup(usd=meta["usd"], flops=meta["flops"], state=state), meta["seconds"]
    started = time.process_time()
    setup = kind.setup()
    seconds = time.process_time() - started
    root.mkdir(parents=True, exist_ok=True)
    tmp = root / f".setup.{uuid.uuid4().hex}.tmp"
    with open(tmp, "wb") as handle:
        pickle.dump(setup.state, handle)
    os.replace(tmp, state_path)
    _write_json(meta_path, {"usd": setup.usd, "flops": setup.flops, "seconds": seconds})
    _save_report(root, kind.report)
    return setup, seconds


# --- one round of judging as a Ray Data job ------------------------------------------------


def judge_batch(
    kind: SourceKind, steps: list[CurationStep], table: pa.Table, gpus: float = 0.0
) -> pa.Table:
    """Judge one batch of offered candidates (with their ``_offset``) by the kind and
    the steps' parallel parts; the unit of work of a curation actor."""
    wall, cpu = time.perf_counter(), time.process_time()
    batch = table.to_pydict()
    offsets = batch.pop("_offset")
    n = len(offsets)
    out = kind.judge(batch)
    texts = [t if isinstance(t, str) else "" for t in out["text"]]
    if len(texts) != n:
        raise AnnealscaleError(
            f"source kind '{kind.kind}': judge returned {len(texts)} texts for {n} candidates"
        )
    cost = np.asarray(out["cost_usd"], dtype=np.float64).copy()
    if cost.shape != (n,) or not np.all(np.isfinite(cost) & (cost >= 0)):
        raise AnnealscaleError(
            f"source kind '{kind.kind}': judge must return one finite, non-negative cost_usd "
            "per candidate"
        )
    columns: dict[str, Any] = {
        "text": texts,
        "cost_usd": cost,
        "flops": np.asarray(out.get("flops", np.zeros(n)), dtype=np.float64).copy(),
        "kept": np.asarray(out.get("kept", np.ones(n, dtype=bool)), dtype=bool)
        & np.array([bool(t.strip()) for t in texts], dtype=bool),
        "score": np.asarray(out.get("score", np.full(n, np.nan)), dtype=np.float64),
    }
    tokens = out.get("tokens")
    columns["tokens"] = np.asarray(
        tokens if tokens is not None else kind.count_tokens(texts), dtype=np.int64
    )
    for step in steps:
        step.judge(columns)
    if gpus > 0:
        seconds = (time.perf_counter() - wall) * gpus
    else:
        seconds = time.process_time() - cpu
    arrays = {"_offset": pa.array(offsets, pa.int64())}
    for name, value in columns.items():
        if isinstance(value, np.ndarray) and value.ndim == 2:
            arrays[name] = pa.FixedSizeListArray.from_arrays(
                pa.array(value.reshape(-1)), value.shape[1]
            )
        else:
            arrays[name] = pa.array(value)
    arrays["seconds"] = pa.array(np.full(n, seconds / max(n, 1)))
    return pa.table(arrays)


class CurationActor:
    """A Ray Data actor: builds the kind and steps once, then judges batches."""

    def __init__(
        self,
        kind_cls: type[SourceKind],
        params: Any,
        tokenizer: Any,
        steps: list[tuple[type[CurationStep], Any, str]],
        state: Any,
        gpus: float,
    ):
        self.kind = kind_cls(params, CurationContext(tokenizer=tokenizer))
        self.kind.device = "cuda" if gpus > 0 else "cpu"
        self.kind.open(state)
        self.steps = [cls(p, column) for cls, p, column in steps]
        for step in self.steps:
            step.open()
        self.gpus = gpus

    def __call__(self, table: pa.Table) -> pa.Table:
        return judge_batch(self.kind, self.steps, table, self.gpus)


def default_actors(resources: CurationResources) -> int:
    """Actor-pool size from the cluster's free CPUs or GPUs (see `CurationResources`)."""
    import ray

    if resources.actors is not None:
        return resources.actors
    available = ray.available_resources() if ray.is_initialized() else {}
    if resources.gpus_per_actor > 0:
        by = available.get("GPU", 0) / resources.gpus_per_actor
    else:
        by = available.get("CPU", os.cpu_count() or 1) / resources.cpus_per_actor
    return int(max(1, min(MAX_DEFAULT_ACTORS, math.floor(by))))


def judge_in_process(
    kind: SourceKind,
    steps: list[CurationStep],
    state: Any,
    table: pa.Table,
    resources: CurationResources,
) -> pa.Table:
    """Judge ``table`` in this process, batch by batch as one curation actor would: the
    same kind, steps and batches, so the same rows as `run_judging`."""
    actor = CurationActor(
        type(kind),
        kind.params,
        token_counter(kind.ctx.tokenizer),
        [(type(s), s.params, s.column) for s in steps],
        state,
        0.0,
    )
    size = resources.batch_size
    parts = [actor(table.slice(i, size)) for i in range(0, table.num_rows, size)]
    parts = [t for t in parts if t.num_rows]
    return pa.concat_tables(parts) if parts else table.slice(0, 0)


def run_judging(
    kind: SourceKind,
    steps: list[CurationStep],
    state: Any,
    table: pa.Table,
    resources: CurationResources,
) -> pa.Table:
    """Judge ``table`` (offered candidates with ``_offset``) with Ray Data
    ``map_batches`` on an actor pool; rows come back in stream order."""
    import ray.data

    data_ctx = ray.data.DataContext.get_current()
    data_ctx.enable_progress_bars = False
    size = resources.batch_size
    blocks = [table.slice(i, size) for i in range(0, table.num_rows, size)]
    actors = min(default_actors(resources), len(blocks))
    remote = {"num_cpus": resources.cpus_per_actor}
    if resources.gpus_per_actor > 0:
        remote["num_gpus"] = resources.gpus_per_actor
    ds = ray.data.from_arrow(blocks).map_batches(
        CurationActor,
        batch_size=size,
        batch_format="pyarrow",
        compute=ray.data.ActorPoolStrategy(size=actors),
        fn_constructor_kwargs={
            "kind_cls": type(kind),
            "params": kind.params,
            "tokenizer": token_counter(kind.ctx.tokenizer),
            "steps": [(type(s), s.params, s.column) for s in steps],
            "state": state,
            "gpus": resources.gpus_per_actor,
        },
        **remote,
    )
    parts = [t for t in ray.get(ds.to_arrow_refs()) if t.num_rows]
    judged = pa.concat_tables(parts) if parts else table.slice(0, 0)
    return judged.sort_by("_offset")


def _judge_round(
    kind: SourceKind,
    steps: list[CurationStep],
    setup: Setup,
    offered: dict[str, list],
    start: int,
    source: SourceSpec,
    ctx: CurationContext,
    in_process_candidates: int,
) -> pa.Table:
    n = len(next(iter(offered.values())))
    table = pa.table({"_offset": pa.array(range(start, start + n), pa.int64()), **offered})
    # A Ray Data actor pool costs seconds to start and stop (the slowest curation test took
    # 131 s under load); a few thousand CPU candidates are judged faster right here.
    local = n <= in_process_candidates and source.resources.gpus_per_actor == 0
    judge = judge_in_process if local else run_judging
    log.info(
        "source '%s': judging candidates %d to %d (%s)",
        source.name,
        start,
        start + n,
        "in process" if local else "Ray Data",
    )
    judged = judge(kind, steps, setup.state, table, source.resources)
    if judged.num_rows != n:
        raise AnnealscaleError(
            f"source '{source.name}': judging returned {judged.num_rows} rows for {n} candidates"
        )
    return judged


def _sequential(steps: list[CurationStep], rows: pa.Table, history: pa.Table | None) -> pa.Table:
    for step in steps:
        started = time.process_time()
        rows = step.sequential(rows, history)
        spent = (time.process_time() - started) / max(rows.num_rows, 1)
        index = rows.schema.get_field_index("seconds")
        seconds = rows.column("seconds").to_numpy() + spent
        rows = rows.set_column(index, "seconds", pa.array(seconds))
    return rows


# --- the stream cache ----------------------------------------------------------------------


class _Stream:
    """Judged candidates of one source as contiguous Parquet shards in stream order."""

    def __init__(self, root: Path):
        self.root = root

    @property
    def ended(self) -> bool:
        return (self.root / "_END").exists()

    def load(self) -> pa.Table | None:
        if not self.root.exists():
            return None
        parts, expected = [], 0
        for path in sorted(self.root.glob("part-*.parquet")):
            start, stop = (int(x) for x in path.stem.split("-")[1:3])
            if start != expected:
                break  # a gap (an interrupted write): stop at the contiguous prefix
            parts.append(pq.read_table(path))
            expected = stop
        return pa.concat_tables(parts) if parts else None

    def append(self, start: int, rows: pa.Table) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        path = self.root / f"part-{start:012d}-{start + rows.num_rows:012d}.parquet"
        tmp = self.root / f".{path.name}.{uuid.uuid4().hex}.tmp"
        pq.write_table(rows, tmp)
        os.replace(tmp, path)

    def mark_end(self, length: int) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        _write_json(self.root / "_END", {"length": length})


def _column(table: pa.Table | None, name: str) -> np.ndarray:
    if table is None or table.num_rows == 0:
        return np.zeros(0)
    return table.column(name).to_numpy(zero_copy_only=False)


def _kept_texts(rows: pa.Table | None) -> list[str]:
    if rows is None or rows.num_rows == 0:
        return []
    return rows.filter(rows.column("kept")).column("text").to_pylist()


def _save_report(root: Path, report: ReadReport) -> None:
    path = root / "inputs_report.json"
    old = json.loads(path.read_text()) if path.exists() else {"empty_files": [], "invalid_utf8": {}}
    merged = {
        "empty_files": sorted(set(old["empty_files"]) | set(report.empty_files)),
        "invalid_utf8": {**old["invalid_utf8"], **report.invalid_utf8},
    }
    if merged != old or not path.exists():
        root.mkdir(parents=True, exist_ok=True)
        _write_json(path, merged)


def _load_report(root: Path) -> dict:
    path = root / "inputs_report.json"
    return json.loads(path.read_text()) if path.exists() else {}


def _write_json(path: Path, data: dict) -> None:
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    tmp.write_text(json.dumps(data))
    os.replace(tmp, path)


__all__ = ["CuratedPool", "cut_point", "curate", "judge_batch", "run_judging", "source_dir"]
