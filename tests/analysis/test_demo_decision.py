"""`annealscale analyze` and `annealscale propose` on the demo's own results recommend the
same source at every kind of target.

`data/demo_results.parquet` is the results table of `annealscale demo` (27 cells: three
sources x three spends x three budgets, run on 2026-12-03), reduced to the columns the
analysis reads.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from annealscale.cluster.cli import main

DEMO = Path(__file__).parent / "data" / "demo_results.parquet"
TARGETS = {
    "tokens": ["--target-tokens", "2e9"],
    "tokens_and_spend": ["--target-tokens", "1e6", "--target-spend", "1.0"],
    "cost": ["--target-cost", "5"],
}
_LEADER = re.compile(r"^(?:Buy (\S+):|.*?: (\S+) leads |.*?the fitted law (\S+) leads )")


def _leader(sentence: str) -> str:
    match = _LEADER.match(sentence)
    assert match, sentence
    return next(g for g in match.groups() if g)


@pytest.mark.slow
@pytest.mark.parametrize("target", sorted(TARGETS))
def test_analyze_and_propose_recommend_the_same_source(target, tmp_path, capsys):
    args = TARGETS[target]
    assert main(["analyze", str(DEMO), "--out", str(tmp_path), *args]) == 0
    analyzed = capsys.readouterr().out.splitlines()
    decision = json.loads((tmp_path / "fits.json").read_text())["decision"]
    assert _leader(analyzed[0]) == decision["best_source"]

    assert main(["propose", str(DEMO), "-n", "2", *args]) == 0
    proposed = capsys.readouterr().out.splitlines()
    prefix = "Decision (as annealscale analyze): "
    assert proposed[0].startswith(prefix)
    assert proposed[0][len(prefix) :] == analyzed[0]
    assert _leader(proposed[0][len(prefix) :]) == decision["best_source"]
    # the complete grid is continued toward the target: cells to run are proposed
    assert any(line.lstrip().startswith("1 ") for line in proposed)
