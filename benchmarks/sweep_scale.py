"""Scale of the sweep engine itself, simulated: many near-empty cells on many nodes.

Three measurements, each of the engine's own code, not of training:

- **scheduling**: a sweep of ``--cells`` cells whose anneal is a no-op (the trial checks
  its cell is unfinished and reports its metrics at once) on a local
  ``ray.cluster_utils.Cluster`` of ``--nodes`` logical nodes with logical GPUs, through
  the sweep's own Tune setup (`tune.sweep._run_trials`: warm trials, the row writer and
  progress callbacks, the results store). ``cells_per_s`` = cells / wall seconds of the
  Tune run; ``driver_peak_mib`` = the sweep driver's peak resident memory;
- **results store**: ``--rows`` finished rows written one file each through
  `ResultsStore.write_row`, then consolidated twice: ``store_first_read_s_*`` reads every
  file (and writes the snapshot), ``store_read_s_*`` is a later consolidation (the
  snapshot plus the files written since: what every sweep's end and ``analyze`` pay);
- **adaptive proposer**: ``propose_batch_s`` = seconds of one `Proposer.propose` batch
  with 10 sources x 1,000 candidates each (5 finished cells per source); the first call
  fits every source (``propose_first_batch_s``), later calls refit only the source whose
  cells changed.

On a host with fewer cores than the simulated cluster has logical CPUs, pass
``--concurrency`` near a few trial processes per host core: the sweep's own concurrency
(from the logical resources) would start more no-op trial processes than the host can run,
and time the host's process scheduling rather than the engine. Both are in RESULTS.md.

Goals (issue 21): cells_per_s >= 20, driver_peak_mib < 2048, store_read_s_100k < 5,
propose_batch_s < 2. The last stdout line is JSON.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import resource
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

# Measure the fitting itself, and leave no fit in the user's cache (`analysis.fit_cache`).
os.environ.setdefault("ANNEALSCALE_FIT_CACHE", "0")

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def noop_cell(config: dict, *, plans: dict, settings) -> None:
    """A cell whose anneal does nothing: the trial's protocol of `tune.trial.run_cell`
    (skip a finished cell, report the metrics, the driver's final report) without work."""
    from ray import tune

    from annealscale.tune.results import ResultsStore
    from annealscale.tune.trial import FINAL, SKIPPED

    started = time.time()
    identity = config["cell_id"]
    if identity not in plans or ResultsStore(settings.results_root).has_finished(identity):
        tune.report({SKIPPED: 1})
        return
    tune.report(
        {
            "train_loss": 1.0,
            "domain_bpb": 1.0,
            "general_bpb": 1.0,
            "train_tokens": 4096,
            "attempt_started_at": started,
            FINAL: time.time(),
        }
    )


def _row(identity: str, i: int) -> dict:
    return {
        "cell_id": identity,
        "source": f"s{i % 10}",
        "source_identity": f"s{i % 10}",
        "curation_spend": float(1 + i % 7),
        "unique_tokens": 1e6,
        "requested_train_tokens": 4096,
        "train_tokens": 4096,
        "seed": i // 70,
        "curation_cost": 0.01,
        "train_flops": 1e12,
        "eval_flops": 1e11,
        "train_cost": 1e-3,
        "total_cost": 1e-3,
    }


def _plans(count: int):
    from annealscale.tune.plans import CellPlan, SweepPlan

    cells = []
    for i in range(count):
        identity = f"{i:012x}"
        cells.append(
            CellPlan(
                cell=SimpleNamespace(identity=identity),
                job=SimpleNamespace(tasks=None, steps=1),
                domain_dir="",
                replay_dir="",
                replay_rows=0,
                row=_row(identity, i),
            )
        )
    return SweepPlan(cells=cells)


def measure_sweep(root: Path, cells: int, nodes: int, cpus: int, gpus: int, concurrency) -> dict:
    import ray
    from ray.cluster_utils import Cluster

    from annealscale.tune.results import ResultsStore
    from annealscale.tune.spec import parse_spec
    from annealscale.tune.storage import StorageLayout
    from annealscale.tune.sweep import _run_trials, max_concurrent_trials
    from annealscale.tune.trial import DRIVER_CPUS
    from tests.helpers import sweep_spec

    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    cluster = Cluster(
        initialize_head=True,
        head_node_args={"num_cpus": cpus, "num_gpus": gpus, "include_dashboard": False},
    )
    for _ in range(nodes - 1):
        cluster.add_node(num_cpus=cpus, num_gpus=gpus)
    ray.init(address=cluster.address, logging_level=logging.WARNING, log_to_driver=False)
    try:
        resources = {"num_workers": 1, "cpus_per_worker": 1, "gpus_per_worker": 1}
        if concurrency:
            resources["max_concurrent_trials"] = concurrency
        spec = parse_spec(
            sweep_spec(str(root / "storage"), name="scale", resources=resources, tracking={})
        )
        layout = StorageLayout.of(spec.storage_path)
        store = ResultsStore(layout.results)
        plan = _plans(cells)
        identities = {p.cell.identity for p in plan.cells}
        cluster_cpus = ray.cluster_resources().get("CPU", 1)
        cluster_gpus = ray.cluster_resources().get("GPU", 0)
        rss_before = _peak_mib()
        started = time.time()
        _run_trials(spec, plan, identities, layout, store, {}, False, None, trial=noop_cell)
        seconds = time.time() - started
        finished = len(store.finished_ids())
        rows = store.read()
        in_trial = rows["attempt_started_at"] - rows["started_at"]
        return {
            "cells": cells,
            "cells_finished": finished,
            "nodes": nodes,
            # every simulated node's processes share these: trial processes beyond them
            # wait for a core, which measures the host rather than the engine
            "host_cores": os.cpu_count(),
            "sweep_s": round(seconds, 1),
            "cells_per_s": round(finished / seconds, 2),
            "concurrency": spec.resources.max_concurrent_trials
            or max_concurrent_trials(
                cluster_cpus, cluster_gpus, spec.resources, DRIVER_CPUS, ray.cluster_resources()
            ),
            # where a cell's time goes: Tune's trial start -> the trial's function running,
            # then -> its row written; and how many cells were in flight on average
            "trial_start_ms_median": round(1000 * float(in_trial.median()), 1),
            "report_to_row_ms_median": round(
                1000 * float((rows["finished_at"] - rows["attempt_started_at"]).median()), 1
            ),
            "cells_in_flight_mean": round(
                float((rows["finished_at"] - rows["started_at"]).sum()) / seconds, 2
            ),
            "driver_peak_mib": round(_peak_mib(), 1),
            "driver_peak_mib_before_sweep": round(rss_before, 1),
        }
    finally:
        ray.shutdown()
        cluster.shutdown()


def measure_store(root: Path, rows: int) -> dict:
    from annealscale.tune.results import ResultsStore

    store = ResultsStore(root / f"store-{rows}")
    started = time.time()
    for i in range(rows):
        identity = f"{i:012x}"
        store.write_row({**_row(identity, i), "status": "finished", "domain_bpb": 1.0})
    write_s = time.time() - started
    ids = {f"{i:012x}" for i in range(rows)}
    out = root / f"out-{rows}"
    first = time.time()
    _, table = store.consolidate(ids, out_dir=out, usd_per_pflop=500.0)
    first_s = time.time() - first
    again = time.time()
    _, table = store.consolidate(ids, out_dir=out, usd_per_pflop=500.0)
    again_s = time.time() - again
    assert len(table) == rows
    return {
        f"store_write_s_{_k(rows)}": round(write_s, 1),
        f"store_first_read_s_{_k(rows)}": round(first_s, 2),
        f"store_read_s_{_k(rows)}": round(again_s, 2),
    }


def measure_propose(sources: int = 10, per_source: int = 1000, batches: int = 3) -> dict:
    import numpy as np

    from annealscale.analysis.propose import Proposer, ProposerSettings
    from annealscale.analysis.propose_costs import CandidateCell
    from annealscale.analysis.simulate import SimSource, make_problem

    problem = make_problem(0)
    rng = np.random.default_rng(1)
    base = problem.sources
    sims = [
        SimSource(
            name=f"src{k}",
            E=base[k % 3].E * rng.uniform(0.98, 1.02),
            B=base[k % 3].B,
            beta=base[k % 3].beta,
            R_star=base[k % 3].R_star,
            tokens_per_usd=base[k % 3].tokens_per_usd,
            base_spend=base[k % 3].base_spend,
        )
        for k in range(sources)
    ]
    problem = type(problem)(sources=tuple(sims), noise=problem.noise, seed=0)
    spends = np.geomspace(1, 16, 20)
    tokens = np.geomspace(problem.train_tokens[0], problem.train_tokens[-1], per_source // 20)
    candidates = [
        CandidateCell(
            source=s.name,
            curation_spend=s.base_spend * k,
            train_tokens=float(d),
            unique_tokens=s.unique_tokens(s.base_spend * k),
        )
        for s in sims
        for k in spends
        for d in tokens
    ]
    seed_cells = [c for i, c in enumerate(candidates) if i % (per_source // 5) == 0]
    proposer = Proposer(target=problem.target, costs=problem.costs, settings=ProposerSettings())
    done = list(seed_cells)
    table = problem.observe(done)
    times = []
    for _ in range(batches):
        started = time.time()
        proposal = proposer.propose(table, candidates, n=3, done=done)
        times.append(time.time() - started)
        new = [proposal.cells[0].cell]  # one trial completes
        done += new
        table = problem.observe(done)
    return {
        "propose_candidates": len(candidates),
        "propose_first_batch_s": round(times[0], 2),
        "propose_batch_s": round(float(np.median(times[1:])), 2),
        "propose_batch_walls_s": [round(t, 2) for t in times],
    }


def _k(rows: int) -> str:
    return f"{rows // 1000}k"


def _peak_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cells", type=int, default=10_000)
    parser.add_argument("--nodes", type=int, default=16)
    parser.add_argument("--cpus-per-node", type=int, default=4)
    parser.add_argument("--gpus-per-node", type=int, default=4)
    parser.add_argument(
        "--concurrency", type=int, default=None, help="max concurrent trials (default: sweep's)"
    )
    parser.add_argument("--rows", type=int, nargs="*", default=[10_000, 100_000])
    parser.add_argument("--skip-sweep", action="store_true")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    result = {}
    with tempfile.TemporaryDirectory(prefix="sweep-scale-") as tmp:
        root = Path(tmp)
        result.update(measure_propose())
        print(json.dumps(result), flush=True)
        for rows in args.rows:
            result.update(measure_store(root, rows))
            print(json.dumps(result), flush=True)
        if not args.skip_sweep:
            result.update(
                measure_sweep(
                    root,
                    args.cells,
                    args.nodes,
                    args.cpus_per_node,
                    args.gpus_per_node,
                    args.concurrency,
                )
            )
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
