"""What does a resumed or repeated sweep save on its driver now that the base model's
measurement is kept (`annealscale.tune.base_measurement`)?

In fresh processes, as a sweep's driver would be, with the demo's base model and two
evaluation sets of the demo's size (128 windows of 128 tokens each), side by side:

- ``measure_cpu_s``: CPU seconds of `measure_base` on an empty cache (loads the model,
  evaluates both sets, stores the measurement), what every sweep's driver paid before;
- ``kept_cpu_s``: the same call in the next process, reading the kept measurement;
- ``measure_process_cpu_s`` / ``kept_process_cpu_s``: the whole process, imports included
  (torch is imported first in both, as a driver's tokenizer imports it);
- ``model_code_imported_when_kept``: whether the model's modelling code was imported at
  all by the second process (it need not be).

Usage: ``python benchmarks/base_measurement.py [--repeats 3]``; the median of
``--repeats`` rounds is reported. JSON on the last line.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

CHILD = """
import json, sys, time
from pathlib import Path
import numpy as np
import torch  # a sweep driver has torch already (its tokenizer imports it)
from annealscale.anneal.demo import DemoAssets
from annealscale.anneal.harness import TaskSuite
from annealscale.tune.base_measurement import measure_base

model = DemoAssets().resolve("demo:base")
rng = np.random.default_rng(0)
vocab = json.loads((Path(model) / "config.json").read_text())["vocab_size"]
windows = {name: rng.integers(1, vocab, (128, 129)) for name in ("domain", "general")}
started = time.process_time()
measure_base(
    model_path=model, trust_remote_code=False, tokenizer=None, windows=windows,
    token_bytes=np.ones(vocab, dtype=np.int64), suite=TaskSuite(),
    cache_dir=Path(sys.argv[1]), model_identity="benchmark",
)
print(json.dumps({
    "call": time.process_time() - started,
    "process": time.process_time(),
    "model_code": any("modeling_" in name for name in sys.modules),
}))
"""


def _run(cache: str) -> dict:
    out = subprocess.run(
        [sys.executable, "-c", CHILD, cache], capture_output=True, text=True, check=True
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    measured, kept = [], []
    for _ in range(args.repeats):
        with tempfile.TemporaryDirectory() as cache:
            measured.append(_run(cache))
            kept.append(_run(cache))
            assert list(Path(cache).glob("base-*.json")), "nothing was kept"
    result = {
        "measure_cpu_s": round(statistics.median(r["call"] for r in measured), 3),
        "kept_cpu_s": round(statistics.median(r["call"] for r in kept), 3),
        "measure_process_cpu_s": round(statistics.median(r["process"] for r in measured), 2),
        "kept_process_cpu_s": round(statistics.median(r["process"] for r in kept), 2),
        "model_code_imported_when_kept": any(r["model_code"] for r in kept),
        "repeats": args.repeats,
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
