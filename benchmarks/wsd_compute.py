"""Training compute of a WSD sweep with trunk branching against the same cells run alone.

Runs one small sweep twice on a real local Ray with tiny demo assets: four token budgets
(factor-2 spacing, 10 to 80 optimizer steps) of one (source, spend), WSD with a 20%
cooldown, once with ``share_trunk`` (one trunk trained to the largest branch point, each
budget runs only its cooldown) and once without (every cell from the base model). The
compute is counted from the steps each sweep's trials actually trained (the sweep's own
ledger), so the ratio does not depend on machine load; the final domain bits per byte of
branched and independent cells are printed side by side.

Usage: python benchmarks/wsd_compute.py [--workdir DIR]
The last line printed is JSON: spent_train_flops, independent_train_flops, ratio (goal at
most 0.65), planned_ratio, and per budget the branched and independent domain_bpb.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # tests.helpers

os.environ.setdefault("RAY_AUTH_MODE", "disabled")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

STEPS = (10, 20, 40, 80)
GOAL_RATIO = 0.65


def spec_data(storage: str, share_trunk: bool) -> dict:
    from tests.helpers import TOKENS_PER_STEP, eval_section, sweep_spec

    return sweep_spec(
        storage,
        name=f"wsd-bench-{'shared' if share_trunk else 'alone'}",
        eval=eval_section(4096),
        grid={"curation_spend": [0.4], "train_tokens": [s * TOKENS_PER_STEP for s in STEPS]},
        schedule={
            "kind": "wsd",
            "peak_lr": 2e-3,
            "warmup_steps": 2,
            "cooldown_fraction": 0.2,
            "cooldown_shape": "1-sqrt",
            "share_trunk": share_trunk,
        },
        resources={"max_concurrent_trials": 2},
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--workdir", default=None, help="keep outputs here (default: temp)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    import pandas as pd

    from annealscale.cluster.local import connect
    from annealscale.tune.spec import parse_spec
    from annealscale.tune.sweep import run_sweep
    from annealscale.tune.trunks import planned_train_steps

    work = Path(args.workdir or tempfile.mkdtemp(prefix="wsd-bench-"))
    from annealscale.anneal.demo import DemoAssets

    assets = DemoAssets.tiny(work / "assets")
    assets.base_model()
    connect(num_cpus=4)
    storage = str(work / "storage")  # shared: pools are curated and packed once
    outcomes, tables, seconds = {}, {}, {}
    for mode, share in (("shared", True), ("alone", False)):
        spec = parse_spec(spec_data(storage, share))
        started = time.time()
        outcomes[mode] = run_sweep(spec, work / mode, resolve=assets.resolve)
        seconds[mode] = time.time() - started
        tables[mode] = pd.read_parquet(outcomes[mode].results_path).set_index("train_tokens")
        if outcomes[mode].failed:
            raise SystemExit(f"{mode} sweep: {outcomes[mode].failed} cell(s) failed")
    shared, alone = outcomes["shared"], outcomes["alone"]
    planned_shared, planned_alone = planned_train_steps(parse_spec(spec_data(storage, True)))
    bpb = {
        str(tokens): {
            "branched": float(tables["shared"].loc[tokens, "domain_bpb"]),
            "independent": float(tables["alone"].loc[tokens, "domain_bpb"]),
        }
        for tokens in tables["shared"].index
    }
    for tokens, pair in bpb.items():
        print(
            f"{tokens:>8} tokens: domain bpb {pair['branched']:.4f} branched, "
            f"{pair['independent']:.4f} independent"
        )
    ratio = shared.spent_train_flops / shared.independent_train_flops
    print(
        f"spent {shared.spent_train_flops:.4g} FLOPs with trunk sharing, "
        f"{alone.spent_train_flops:.4g} without: ratio {ratio:.3f} (goal <= {GOAL_RATIO})"
    )
    result = {
        "spent_train_flops": shared.spent_train_flops,
        "independent_train_flops": shared.independent_train_flops,
        "unshared_sweep_spent_train_flops": alone.spent_train_flops,
        "ratio": ratio,
        "planned_ratio": planned_shared / planned_alone,
        "goal_ratio": GOAL_RATIO,
        "domain_bpb": bpb,
        "max_bpb_rel_diff": max(
            abs(p["branched"] - p["independent"]) / p["independent"] for p in bpb.values()
        ),
        "sweep_seconds": seconds,
        "budgets_steps": list(STEPS),
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
