"""How long it takes to fit one source's law with 1000 bootstrap resamples.

A source of a typical sweep: 3 curation spends x 6 training budgets (1e6 to 1e8
tokens) x 2 seeds = 36 cells, 1 % multiplicative noise. "seconds" is the wall
time of `fit_law` (dense grid, strict multi-start refinement) plus
`bootstrap_law` with 1000 resamples, the median of ``--repeats`` runs after a
warm-up; the goal is under 5 s on a 2-core machine. The curation-aware law
(``effective_data``, two nonlinear parameters) is timed the same way.

Usage: python benchmarks/fit_speed.py [--repeats 3] [--n-boot 1000]
The last line printed is JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time

import numpy as np

from annealscale.analysis.bootstrap import bootstrap_law
from annealscale.analysis.fit import fit_law
from annealscale.analysis.laws import effective_data_law, power_law_d

SPENDS = (100.0, 400.0, 1600.0)  # USD
BUDGETS = np.geomspace(1e6, 1e8, 6)  # training tokens
SEEDS = 2
NOISE = 0.01
GOAL_SECONDS = 5.0


def cells(law: str, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """One source's cells as the law's design ``(n, k)`` and metric ``(n,)``."""
    c, d = np.meshgrid(np.repeat(SPENDS, SEEDS), BUDGETS, indexing="ij")
    c, d = c.ravel(), d.ravel()
    if law == "power_law_D":
        x = d
        y = power_law_d(d, E=0.8, B=1.0, beta=0.5)
    else:
        x = np.column_stack([0.5 * d, 1e4 * c])  # pools repeated up to 50 times
        y = effective_data_law(x[:, 0], x[:, 1], E=0.8, B=1.0, beta=0.4, R_star=5.0)
    return x, y * np.exp(NOISE * rng.standard_normal(y.shape))


def time_one(law: str, n_boot: int, seed: int) -> dict[str, float]:
    x, y = cells(law, np.random.default_rng(seed))
    wall, cpu = time.perf_counter(), time.process_time()
    res = fit_law(x, y, law=law)
    fit_wall = time.perf_counter() - wall
    boot = bootstrap_law(x, y, law=law, n_boot=n_boot, seed=seed, start=res.theta)
    return {
        "seconds": time.perf_counter() - wall,
        "cpu_seconds": time.process_time() - cpu,
        "fit_seconds": fit_wall,
        "bootstrap_seconds": time.perf_counter() - wall - fit_wall,
        "non_converged_fraction": float(1.0 - boot.converged.mean()),
        "n_cells": float(len(y)),
    }


def median_of(law: str, n_boot: int, repeats: int) -> dict[str, float]:
    time_one(law, n_boot, seed=999)  # warm-up: imports, caches
    runs = [time_one(law, n_boot, seed=s) for s in range(repeats)]
    return {k: statistics.median(r[k] for r in runs) for k in runs[0]} | {
        "min_seconds": min(r["seconds"] for r in runs)
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--n-boot", type=int, default=1000)
    args = parser.parse_args()

    main_law = median_of("power_law_D", args.n_boot, args.repeats)
    curation = median_of("effective_data", args.n_boot, args.repeats)
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(
        f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, load {load:.1f}"
    )
    for name, r in (("power_law_D", main_law), ("effective_data", curation)):
        print(
            f"{name}: {int(r['n_cells'])} cells, {args.n_boot} resamples: "
            f"{r['seconds']:.2f} s wall (fit {r['fit_seconds']:.2f} s, bootstrap "
            f"{r['bootstrap_seconds']:.2f} s), {r['cpu_seconds']:.2f} s CPU, "
            f"{r['non_converged_fraction']:.1%} resamples not converged"
        )
    print(
        json.dumps(
            {
                "seconds": round(main_law["seconds"], 4),
                "goal_seconds": GOAL_SECONDS,
                "law": "power_law_D",
                "n_boot": args.n_boot,
                "n_cells": int(main_law["n_cells"]),
                "cpu_seconds": round(main_law["cpu_seconds"], 4),
                "min_seconds": round(main_law["min_seconds"], 4),
                "fit_seconds": round(main_law["fit_seconds"], 4),
                "bootstrap_seconds": round(main_law["bootstrap_seconds"], 4),
                "non_converged_fraction": round(main_law["non_converged_fraction"], 4),
                "effective_data_seconds": round(curation["seconds"], 4),
                "effective_data_cpu_seconds": round(curation["cpu_seconds"], 4),
                "repeats": args.repeats,
                "load_average": round(load, 2),
            }
        )
    )


if __name__ == "__main__":
    main()
