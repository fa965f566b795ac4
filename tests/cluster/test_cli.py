"""The command line: bad input ends in one line naming the problem and exit code 2."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import yaml

from annealscale.cluster.cli import EXAMPLES, main, quick_variant
from annealscale.tune.cells import expand_grid
from annealscale.tune.spec import load_spec


def _bad_spec(tmp_path: Path) -> Path:
    spec = yaml.safe_load((EXAMPLES / "demo.yaml").read_text())
    spec["sources"][1]["kind"] = "classifier_filtr"
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


def test_bad_spec_is_one_line_naming_the_field(tmp_path, capsys):
    code = main(["validate", str(_bad_spec(tmp_path))])
    err = capsys.readouterr().err
    assert code == 2
    assert err.count("\n") == 1
    assert err.startswith("annealscale: error: sources[1].kind: unknown source kind")
    assert "Traceback" not in err


def test_sweep_rejects_a_bad_spec_before_starting_ray(tmp_path, capsys):
    import ray

    ray_was_running = ray.is_initialized()
    code = main(["sweep", str(_bad_spec(tmp_path)), "--out", str(tmp_path / "out")])
    assert code == 2
    assert "sources[1].kind" in capsys.readouterr().err
    assert ray.is_initialized() == ray_was_running
    assert not (tmp_path / "out").exists()


def test_missing_spec_file_names_it(tmp_path, capsys):
    missing = tmp_path / "nope.yaml"
    assert main(["validate", str(missing)]) == 2
    assert f"{missing}: spec file not found" in capsys.readouterr().err


def test_analyze_missing_results_names_the_file(tmp_path, capsys):
    missing = tmp_path / "results.parquet"
    assert main(["analyze", str(missing), "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and str(missing) in err


def test_analyze_a_table_without_finished_cells_is_one_line(tmp_path, capsys):
    path = tmp_path / "results.parquet"
    columns = {c: [1.0] for c in ("curation_spend", "unique_tokens", "train_tokens", "seed")}
    metrics = (
        "domain_bpb",
        "general_bpb",
        "curation_cost",
        "train_flops",
        "train_cost",
        "total_cost",
    )
    pd.DataFrame(
        {"source": ["a"], "status": ["failed"], **columns, **{m: [float("nan")] for m in metrics}}
    ).to_parquet(path)
    assert main(["analyze", str(path), "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "finished" in err


def test_validate_lists_every_cell(capsys):
    assert main(["validate", str(EXAMPLES / "demo.yaml")]) == 0
    out = capsys.readouterr().out
    assert "3 sources, 27 cells" in out
    assert len([line for line in out.splitlines() if "spend=" in line]) == 27


def test_quick_variant_is_two_sources_two_spends_two_budgets():
    spec = load_spec(EXAMPLES / "demo.yaml")
    quick = quick_variant(spec)
    cells = expand_grid(quick)
    assert len(cells) == 8
    assert {c.source for c in cells} == {s.name for s in spec.sources[:2]}
    assert {c.curation_spend for c in cells} == {
        min(spec.grid.curation_spend),
        max(spec.grid.curation_spend),
    }
    assert {c.train_tokens for c in cells} == set(sorted(spec.grid.train_tokens)[:2])
    full_ids = {c.identity for c in expand_grid(spec)}
    assert {c.identity for c in cells} <= full_ids  # quick cells are reused by a later full run


def test_a_local_ray_that_cannot_start_is_one_line(tmp_path):
    """A real failed start of the local Ray (its temp dir cannot be created), run in a
    fresh process because this one may already hold the session's Ray."""
    import os
    import subprocess
    import sys

    env = {**os.environ, "RAY_TMPDIR": "/dev/null/ray", "RAY_ADDRESS": ""}
    done = subprocess.run(
        [sys.executable, "-m", "annealscale.cluster.cli", "sweep", str(EXAMPLES / "demo.yaml")]
        + ["--out", str(tmp_path / "out")],
        cwd=Path(__file__).resolve().parents[2],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2, done.stderr
    assert done.stderr.count("\n") == 1, done.stderr
    assert done.stderr.startswith("annealscale: error: cannot start a local Ray instance (")
    assert "/dev/null/ray" in done.stderr and "Traceback" not in done.stderr
