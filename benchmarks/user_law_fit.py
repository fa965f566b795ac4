"""How long a user law takes to fit with 1000 bootstrap resamples, and what the
batched finite differences buy.

A user law (a plain function, no analytic gradient) of two variables, Chinchilla-like
with an offset allowed to be negative, ``L = E + A (N/1e6)^-alpha + B (D/1e6)^-beta``,
``E`` in ``(-5, 5)``: five parameters, 5 model sizes x 8 token counts = 40 points, 1 %
noise. Timed: `LawFit(law, n_boot=1000).fit` split into the fit (`fit_law`) and the
bootstrap (`bootstrap_law`), once with the batched gradient (all ``2p`` perturbed
parameter vectors in one call of the law) and once with the former path (one pair of
calls per parameter), patched in here for the comparison only. The median of
``--repeats`` runs after a warm-up.

Usage: python benchmarks/user_law_fit.py [--repeats 3] [--n-boot 1000]
The last line printed is JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np

from annealscale.analysis import laws
from annealscale.analysis.bootstrap import bootstrap_law
from annealscale.analysis.fit import fit_law
from annealscale.analysis.laws import user_law

TRUE = {"E": 0.8, "A": 0.5, "B": 1.0, "alpha": 0.3, "beta": 0.4}


def chinchilla_like(N, D, *, E, A, B, alpha, beta):
    """``E + A (N/1e6)^-alpha + B (D/1e6)^-beta``, written for numpy broadcasting."""
    return E + A * (N / 1e6) ** (-alpha) + B * (D / 1e6) ** (-beta)


LAW = user_law(
    chinchilla_like,
    name="chinchilla_like",
    variables=("N", "D"),
    columns=("model_params", "train_tokens"),
    bounds={"E": (-5.0, 5.0), "A": (1e-3, 10.0), "B": (1e-3, 10.0), "alpha": (0.01, 2.0),
            "beta": (0.01, 2.0)},
)  # fmt: skip


def cells(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    n, d = np.meshgrid(np.geomspace(1e6, 1e9, 5), np.geomspace(1e6, 1e9, 8), indexing="ij")
    x = np.column_stack([n.ravel(), d.ravel()])
    y = chinchilla_like(x[:, 0], x[:, 1], **TRUE)
    return x, y * (1 + 0.01 * rng.standard_normal(len(y)))


def _per_parameter(self, x, theta, *, with_value):
    """The former gradient: central differences one parameter at a time, 2p calls."""
    grads = []
    h_all = self._fd_steps(theta)
    for j in range(theta.shape[-1]):
        h = h_all[..., j]
        up, down = theta.copy(), theta.copy()
        up[..., j] += h
        down[..., j] -= h
        grads.append((self.evaluate(x, up) - self.evaluate(x, down)) / (2.0 * h[..., None]))
    value = self.evaluate(x, theta) if with_value else np.empty(0)
    return value, np.stack(grads, axis=-1)


@contextmanager
def per_parameter_gradient() -> Iterator[None]:
    batched = laws.Law._finite_difference
    laws.Law._finite_difference = _per_parameter
    try:
        yield
    finally:
        laws.Law._finite_difference = batched


def run(x: np.ndarray, y: np.ndarray, n_boot: int) -> tuple[float, ...]:
    """Wall and CPU seconds of the fit and of the bootstrap, and the fitted parameters."""
    w0, c0 = time.perf_counter(), time.process_time()
    res = fit_law(x, y, law=LAW)
    w1, c1 = time.perf_counter(), time.process_time()
    bootstrap_law(x, y, law=LAW, n_boot=n_boot, start=res.theta, target=res.target)
    w2, c2 = time.perf_counter(), time.process_time()
    return w1 - w0, w2 - w1, c1 - c0, c2 - c1, dict(res.params)


def median_times(x, y, n_boot, repeats) -> tuple[Any, ...]:
    run(x, y, min(n_boot, 50))  # warm-up
    runs = [run(x, y, n_boot) for _ in range(repeats)]
    return (*(statistics.median(r[i] for r in runs) for i in range(4)), runs[-1][4])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--n-boot", type=int, default=1000)
    args = parser.parse_args()
    x, y = cells(np.random.default_rng(0))
    fit_s, boot_s, fit_cpu, boot_cpu, params = median_times(x, y, args.n_boot, args.repeats)
    with per_parameter_gradient():
        old_fit_s, old_boot_s, old_fit_cpu, old_boot_cpu, old_params = median_times(
            x, y, args.n_boot, args.repeats
        )
    print(f"batched gradient:       fit {fit_s:.2f} s, bootstrap {boot_s:.2f} s")
    print(f"per-parameter gradient: fit {old_fit_s:.2f} s, bootstrap {old_boot_s:.2f} s")
    print("fitted:", {p: round(v, 4) for p, v in params.items()}, "true:", TRUE)
    print(
        json.dumps(
            {
                "law": LAW.name,
                "n_params": LAW.n_params,
                "n_points": len(y),
                "n_boot": args.n_boot,
                "repeats": args.repeats,
                "fit_seconds": round(fit_s, 4),
                "bootstrap_seconds": round(boot_s, 4),
                "total_seconds": round(fit_s + boot_s, 4),
                "per_parameter_fit_seconds": round(old_fit_s, 4),
                "per_parameter_bootstrap_seconds": round(old_boot_s, 4),
                "per_parameter_total_seconds": round(old_fit_s + old_boot_s, 4),
                "speedup": round((old_fit_s + old_boot_s) / (fit_s + boot_s), 3),
                "fit_cpu_seconds": round(fit_cpu, 4),
                "bootstrap_cpu_seconds": round(boot_cpu, 4),
                "per_parameter_fit_cpu_seconds": round(old_fit_cpu, 4),
                "per_parameter_bootstrap_cpu_seconds": round(old_boot_cpu, 4),
                "cpu_speedup": round(
                    (old_fit_cpu + old_boot_cpu) / max(fit_cpu + boot_cpu, 1e-9), 3
                ),
                "load_average": round(os.getloadavg()[0], 2),
                "same_fit": all(
                    abs(params[p] - old_params[p]) <= 1e-6 * (1 + abs(params[p])) for p in params
                ),
            }
        )
    )


if __name__ == "__main__":
    main()
