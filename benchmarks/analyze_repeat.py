"""How much faster is a second analysis of the same table (another target, or `propose`
after `analyze`) with the fit cache (`annealscale.analysis.fit_cache`)?

On the demo's results table (27 cells, three sources), in one process with everything
imported first, side by side:

- ``cold_s``: `annealscale.analysis.evaluate` at ``--target-tokens 2e9`` on an empty
  cache (every fit, validation fold and bootstrap computed and stored);
- ``refit_s``: the same call at ``--target-cost 5`` with the cache turned off
  (``ANNEALSCALE_FIT_CACHE=0``), what every analysis cost before;
- ``warm_s``: the ``--target-cost 5`` call again with the cache on;
- ``ratio``: ``refit_s / warm_s``; ``same_decision``: the warm and refitted analyses
  name the same source and the same parameters.

Usage: ``python benchmarks/analyze_repeat.py [--results PATH] [--repeats 3]``; the best
of ``--repeats`` is reported for each timing. JSON on the last line.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import numpy as np

DEMO = Path(__file__).resolve().parents[1] / "tests" / "analysis" / "data" / "demo_results.parquet"


def _params(analysis) -> np.ndarray:
    return np.concatenate(
        [np.array(list(f.pooled.result.params.values())) for f in analysis.fits.values()]
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--results", default=str(DEMO))
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    from annealscale.analysis import evaluate

    cold, refit, warm = [], [], []
    for _ in range(args.repeats):
        with tempfile.TemporaryDirectory() as cache:
            os.environ["ANNEALSCALE_CACHE"] = cache
            os.environ["ANNEALSCALE_FIT_CACHE"] = "1"
            started = time.perf_counter()
            evaluate(args.results, target_tokens=2e9)
            cold.append(time.perf_counter() - started)

            os.environ["ANNEALSCALE_FIT_CACHE"] = "0"
            started = time.perf_counter()
            fresh = evaluate(args.results, target_cost=5.0)
            refit.append(time.perf_counter() - started)

            os.environ["ANNEALSCALE_FIT_CACHE"] = "1"
            started = time.perf_counter()
            cached = evaluate(args.results, target_cost=5.0)
            warm.append(time.perf_counter() - started)
    same = fresh.decision.best_source == cached.decision.best_source and np.array_equal(
        _params(fresh), _params(cached)
    )
    print(
        json.dumps(
            {
                "cold_s": round(min(cold), 2),
                "refit_s": round(min(refit), 2),
                "warm_s": round(min(warm), 2),
                "ratio": round(min(refit) / min(warm), 1),
                "same_decision": bool(same),
            }
        )
    )


if __name__ == "__main__":
    main()
