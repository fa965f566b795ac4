from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from annealscale.analysis.errors import AnalysisError
from annealscale.analysis.table import CELL_KEY, cell_means, load_results


def test_only_finished_rows_with_finite_bpb_are_kept(results):
    table = load_results(results)
    assert len(table.rows) == len(results)
    assert len(table.finished) == 40
    assert table.n_excluded == 3
    assert (table.finished["status"] == "finished").all()
    assert np.isfinite(table.finished["domain_bpb"]).all()
    assert table.baselines == {"base_domain_bpb": 1.9, "base_general_bpb": None}


def test_input_frame_is_not_modified(results):
    before = results.copy()
    load_results(results)
    assert results.equals(before)


def test_reads_a_parquet_path(results, tmp_path):
    path = tmp_path / "results.parquet"
    results.to_parquet(path)
    table = load_results(path)
    assert table.source_path == str(path)
    assert len(table.finished) == 40


def test_missing_columns_are_named(results):
    with pytest.raises(
        AnalysisError, match="missing required column\\(s\\) 'train_tokens', 'domain_bpb'"
    ):
        load_results(results.drop(columns=["seed", "train_tokens", "domain_bpb"]))


def test_four_columns_are_enough(results):
    minimal = results[["source", "curation_spend", "train_tokens", "domain_bpb"]]
    table = load_results(minimal)
    assert len(table.finished) == 41  # no status column: only the two NaN rows are excluded
    assert table.has("train_tokens") and not table.has("total_cost")
    assert any("no 'status' column" in n for n in table.notes)
    assert any("no 'seed' column" in n for n in table.notes)
    cells = cell_means(table.finished)
    assert set(cells.columns) == {*CELL_KEY, "domain_bpb", "n_seeds"}


def test_derived_columns(results):
    full = results.assign(repetition=results["train_tokens"] / results["unique_tokens"])
    table = load_results(full.drop(columns=["total_cost"]))
    np.testing.assert_allclose(table.finished["domain_tokens"], table.finished["train_tokens"])
    np.testing.assert_allclose(
        table.finished["total_cost"],
        table.finished["curation_cost"] + table.finished["train_cost"],
    )
    assert any("domain_tokens derived" in n for n in table.notes)


@pytest.mark.parametrize("minimal", [False, True])
def test_finished_rows_are_in_a_canonical_order(results, minimal):
    if minimal:  # seeds are then numbered by the loader, which must not see the row order
        results = results[["source", "curation_spend", "train_tokens", "domain_bpb"]]
    a = load_results(results).finished
    b = load_results(results.sample(frac=1.0, random_state=3)).finished
    pd.testing.assert_frame_equal(a, b)


def test_empty_table_raises(results):
    with pytest.raises(AnalysisError, match="results table is empty"):
        load_results(results.iloc[:0])


def test_no_finished_cells_raises(results):
    failed = results.assign(status="failed")
    with pytest.raises(AnalysisError, match=r"no finished cells.*'status' column"):
        load_results(failed)


def test_missing_file_raises(tmp_path):
    with pytest.raises(AnalysisError, match="not found"):
        load_results(tmp_path / "nope.parquet")


def test_non_numeric_column_is_named(results):
    with pytest.raises(AnalysisError, match="'total_cost' must be numeric"):
        load_results(results.assign(total_cost="cheap"))


def test_baseline_that_varies_raises(results):
    varied = results.assign(base_domain_bpb=np.linspace(1.0, 2.0, len(results)))
    with pytest.raises(AnalysisError, match="'base_domain_bpb' must hold the same value"):
        load_results(varied)


def test_cell_means_average_seeds(results):
    cells = cell_means(load_results(results).finished)
    assert len(cells) == 2 * 2 * 5  # sources x spends x token counts
    assert (cells["n_seeds"] == 2).all()
    one = results[
        (results["source"] == "A")
        & (results["curation_spend"] == 100.0)
        & (results["train_tokens"] == 1e8)
        & (results["status"] == "finished")
    ]
    got = cells[
        (cells["source"] == "A")
        & (cells["curation_spend"] == 100.0)
        & (cells["train_tokens"] == 1e8)
    ]
    assert got["domain_bpb"].item() == pytest.approx(one["domain_bpb"].mean())


@pytest.mark.parametrize("col", ["curation_spend", "total_cost", "train_tokens"])
def test_finished_rows_need_finite_spend_cost_and_tokens(results, col):
    broken = results.copy()
    broken.loc[0, col] = np.nan
    with pytest.raises(AnalysisError, match=f"'{col}' must be finite"):
        load_results(broken)
