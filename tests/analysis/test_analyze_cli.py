"""`annealscale analyze` on a results table from another tool: four columns are enough."""

from __future__ import annotations

import json

import pytest

from annealscale.cluster.cli import main

MINIMAL = ["source", "curation_spend", "train_tokens", "domain_bpb"]


@pytest.fixture
def minimal_parquet(make_results, tmp_path):
    table = make_results()
    table = table[table["status"] == "finished"].dropna(subset=["domain_bpb"])[MINIMAL]
    path = tmp_path / "results.parquet"
    table.to_parquet(path)
    return path


def test_minimal_columns_table_runs_end_to_end(minimal_parquet, tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["analyze", str(minimal_parquet), "--out", str(out), "--target-tokens", "1e9"]) == 0
    printed = capsys.readouterr().out
    assert printed.startswith("Buy B: at 1e9 training tokens")
    assert "every curation spend pooled" in printed  # no spend term: no spend quoted
    data = json.loads((out / "fits.json").read_text())
    (target,) = data["targets"]
    assert target["target"]["train_tokens"] == 1e9
    assert max(target["p_best"], key=target["p_best"].get) == "B"
    assert data["fit_settings"]["n_boot"] == 1000
    notes = " ".join(data["notes"])
    assert "no cost columns" in notes and "no 'status' column" in notes
    assert data["frontier"] is None and data["cost_model"] is None
    assert (out / "report.html").exists()
    assert (out / "plots" / "curves.png").exists()
    assert not (out / "plots" / "forgetting.png").exists()  # no general_bpb: skipped


@pytest.mark.parametrize(
    ("flag", "value", "names"),
    [
        ("--target-cost", "500", "total_cost"),
        ("--target-spend", "100", "unique_tokens"),
    ],
)
def test_a_target_the_table_cannot_answer_is_one_line(
    minimal_parquet, tmp_path, capsys, flag, value, names
):
    """Four columns model neither cost nor spend: the flag is refused, not ignored."""
    out = tmp_path / "out"
    assert main(["analyze", str(minimal_parquet), "--out", str(out), flag, value]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert flag in err and names in err
    assert not (out / "fits.json").exists()


def test_terminal_shows_every_headline_sentence_and_warning(minimal_parquet, tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["analyze", str(minimal_parquet), "--out", str(out), "--target-tokens", "1e9"]) == 0
    printed = capsys.readouterr().out
    data = json.loads((out / "fits.json").read_text())
    for message in data["decision"]["messages"]:
        assert message in printed
    assert "Extrapolation: the predictions reach" in printed  # 10x beyond 1e8
    assert "warning: no cost columns" in printed


@pytest.mark.parametrize("column", MINIMAL[1:])
def test_missing_column_is_one_line_naming_it(make_results, tmp_path, capsys, column):
    path = tmp_path / "results.parquet"
    make_results().drop(columns=[column]).to_parquet(path)
    assert main(["analyze", str(path), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert f"missing required column(s) '{column}'" in err
    assert "Traceback" not in err
