from __future__ import annotations

import base64
import json
import re
from dataclasses import FrozenInstanceError

import numpy as np
import pytest
from matplotlib.image import imread

from annealscale.analysis import AnalysisError, analyze
from annealscale.analysis.laws import power_law_d, user_law
from annealscale.analysis.plots import curves
from annealscale.analysis.report import dumps_json
from annealscale.analysis.sources import fit_sources
from annealscale.analysis.table import load_results

TRUE = {"A": {"E": 1.0, "B": 0.3, "beta": 0.2}, "B": {"E": 0.8, "B": 0.8, "beta": 0.5}}
SPEND_GAIN = 0.005  # as in conftest


@pytest.fixture(scope="module")
def analyzed(tmp_path_factory, make_results):
    out = tmp_path_factory.mktemp("report")
    table = make_results()
    return table, analyze(table, out, target_tokens=1e9, n_boot=200), out


def _strict_json(text: str):
    def no_constants(name: str):
        raise AssertionError(f"non-standard JSON constant {name}")

    return json.loads(text, parse_constant=no_constants)


def test_fits_json_structure(analyzed):
    _, result, out = analyzed
    assert result.fits_json == out / "fits.json"
    data = _strict_json(result.fits_json.read_text())
    assert data["schema_version"] == 3
    assert data["law"]["name"] == "power_law_D"
    assert data["law"]["params"] == ["E", "B", "beta"]
    assert "rolling-origin" in data["law"]["selected_by"]
    assert data["candidates"] == ["power_law_D"]  # the others need absent columns
    assert any("effective_data' skipped" in n for n in data["notes"])
    assert data["fit_settings"]["n_boot"] == 200 and data["fit_settings"]["level"] == 0.9
    assert data["input"] == {"path": None, "n_rows": 43, "n_finished": 40, "n_excluded": 3}
    assert data["baselines"]["base_domain_bpb"] == 1.9
    assert sorted(data["sources"]) == ["A", "B"]
    for name, src in data["sources"].items():
        assert src["law"] == "power_law_D"
        assert "D / 1e6" in src["formula"]
        assert src["pooled_over_spends"] is True
        assert "every curation spend together" in src["note"]
        assert src["n_points"] == 20  # the failed and NaN rows are not counted
        assert set(src["params"]) == {"E", "B", "beta"}
        assert src["quality"]["n_distinct_x"] == 5
        # A's two spends differ by 0.5 %, beyond the Huber threshold: pooled, its optimum is a
        # flat valley of equal loss, which the fit reports rather than hides.
        assert src["flags"] == (["disagreeing_optima"] if name == "A" else [])
        assert src["bootstrap"]["n_resamples"] == 200
        for p, (lo, hi) in src["param_intervals"].items():
            assert lo <= src["params"][p] <= hi
        assert src["prediction"]["train_tokens"] == 1e9
        assert src["prediction"]["extrapolated"] is True
        assert [s["curation_spend"] for s in src["per_spend"]] == sorted(
            {"A": [100.0, 400.0], "B": [50.0, 200.0]}[name]
        )
        assert [s["n_points"] for s in src["per_spend"]] == [10, 10]
    (target,) = data["targets"]
    assert set(target["p_best"]) == {"A", "B"}
    assert data["validation"]["selected_law"] == "power_law_D"
    assert data["cost_model"]["usd_per_train_token"] == pytest.approx(1e-6)
    assert len(data["frontier"]["total_cost"]) == len(data["frontier"]["best_source"])


def test_fits_json_values(analyzed):
    _, result, _ = analyzed
    data = _strict_json(result.fits_json.read_text())
    for name, params in TRUE.items():
        src = data["sources"][name]
        truth = float(power_law_d(1e9, **params))
        # pooled over spends that differ by 0.5 %: near the midpoint
        assert src["prediction"]["domain_bpb"] == pytest.approx(
            truth * (1 - SPEND_GAIN / 2), rel=0.01
        )
        for k, spend_fit in enumerate(src["per_spend"]):
            expected = float(power_law_d(1e8, **params)) * (1 - SPEND_GAIN * k)
            got = spend_fit["params"]
            assert float(power_law_d(1e8, **got)) == pytest.approx(expected, rel=0.005)
    b = data["sources"]["B"]["params"]
    assert b["E"] == pytest.approx(0.8, rel=0.03)
    assert b["beta"] == pytest.approx(0.5, rel=0.1)
    decision = data["decision"]
    assert decision["best_source"] == "B"
    assert decision["micro_annealing_pick"] == "A"
    assert decision["micro_annealing_wrong"] is True
    assert decision["p_best"]["B"] > 0.95
    best, cheap = decision["best_cell"], decision["cheapest_cell_within_tolerance"]
    assert (best["source"], best["curation_spend"], best["train_tokens"]) == ("B", 200.0, 1e8)
    assert (cheap["source"], cheap["curation_spend"], cheap["train_tokens"]) == ("B", 50.0, 1e8)
    assert cheap["total_cost"] == pytest.approx(150.0)
    (held_out,) = data["validation"]["laws"].values()
    # rolling origins along tokens: fitted on the three smallest counts and up
    assert {c["train_tokens"] for c in held_out["cells"]} == {3e7, 1e8}
    assert all(c["train_tokens"] > c["origin"] and c["reach"] > 1 for c in held_out["cells"])
    assert held_out["mean_abs_error"] < 0.02


def test_failed_rows_do_not_change_the_fits(analyzed):
    table, result, _ = analyzed
    clean = table[(table["status"] == "finished") & table["domain_bpb"].notna()]
    expected = fit_sources(load_results(clean).finished)
    for name, sf in expected.items():
        got = result.fits[name].pooled.result.params
        for p, v in sf.pooled.result.params.items():
            assert got[p] == pytest.approx(v, rel=1e-9)


def test_report_html_is_self_contained(analyzed):
    _, result, _ = analyzed
    html = result.report_html.read_text()
    assert "Micro-annealing would pick A" in html
    assert "the micro-annealing ranking is wrong at the target, B wins" in html
    assert "Crossover: B overtakes A at" in html
    images = re.findall(r'src="data:image/png;base64,([^"]+)"', html)
    assert len(images) == len(result.plots) == 5
    embedded = {base64.b64decode(b) for b in images}
    assert embedded == {p.read_bytes() for p in result.plots.values()}
    assert "<script" not in html
    assert not re.search(r'(src|href)="(https?:)?//', html)
    assert html.count('<tr class="failed">') == 3  # the cells table keeps excluded rows, greyed
    assert html.count('<tr class="pooled">') == 2  # one pooled fit per source in the fits table


def test_plots_are_written_and_not_blank(analyzed):
    _, result, out = analyzed
    assert set(result.plots) == {"curves", "frontier", "crossovers", "held_out", "forgetting"}
    for path in result.plots.values():
        assert path.parent == out / "plots"
        raw = path.read_bytes()
        assert raw[:8] == b"\x89PNG\r\n\x1a\n"
        assert len(raw) > 10_000
        pixels = imread(path)  # (H, W, 4)
        assert pixels.shape[0] > 300 and pixels.shape[1] > 500
        assert pixels[..., :3].std() > 0.05


def test_result_is_frozen(analyzed):
    _, result, _ = analyzed
    with pytest.raises(FrozenInstanceError):
        result.fits_json = None  # type: ignore[misc]


def test_base_model_line_is_drawn(analyzed):
    table, result, _ = analyzed
    finished = load_results(table).finished
    primary = result.decision.primary
    fig = curves(finished, result.fits, primary, 1.9, 0.9)
    for ax in fig.axes:
        flat = [ln for ln in ax.get_lines() if np.allclose(ln.get_ydata(), 1.9)]
        assert len(flat) == 1 and flat[0].get_linestyle() == "--"
    assert not any(
        np.allclose(ln.get_ydata(), 1.9)
        for ax in curves(finished, result.fits, primary, None, 0.9).axes
        for ln in ax.get_lines()
    )


def test_results_do_not_depend_on_row_order(make_results, tmp_path):
    table = make_results()
    shuffled = table.sample(frac=1.0, random_state=7).reset_index(drop=True)
    a = analyze(table, tmp_path / "a", target_tokens=1e9, n_boot=50)
    b = analyze(shuffled, tmp_path / "b", target_tokens=1e9, n_boot=50)
    assert a.fits_json.read_text() == b.fits_json.read_text()


def test_single_token_count_is_reported_not_raised(make_results, tmp_path):
    table = make_results()
    table = table[table["train_tokens"] == 1e7]
    path = tmp_path / "results.parquet"
    table.to_parquet(path)
    result = analyze(path, tmp_path / "out", n_boot=20)
    data = _strict_json(result.fits_json.read_text())
    assert data["input"]["path"] == str(path)
    for src in data["sources"].values():
        assert src["params"] is None
        assert "1 distinct D value" in src["error"]
        assert all(s["params"] is None for s in src["per_spend"])
    assert data["decision"]["best_source"] is None
    assert data["decision"]["best_cell"]["train_tokens"] == 1e7
    assert "no law could be checked" in data["law"]["selected_by"]
    html = result.report_html.read_text()
    assert "No source could be ranked" in html
    assert "Not ranked (no fit): A, B." in html


def test_missing_column_raises(make_results, tmp_path):
    with pytest.raises(AnalysisError, match="'domain_bpb'"):
        analyze(make_results().drop(columns=["domain_bpb"]), tmp_path)
    assert not (tmp_path / "fits.json").exists()


def test_no_finished_cells_raises(make_results, tmp_path):
    with pytest.raises(AnalysisError, match="no finished cells"):
        analyze(make_results().assign(status="failed"), tmp_path)


def test_json_writer_nulls_non_finite_numbers():
    text = dumps_json({"a": float("nan"), "b": [np.float64(np.inf), np.int64(3)], "c": None})
    assert _strict_json(text) == {"a": None, "b": [None, 3], "c": None}


def test_a_user_law_runs_through_analyze(make_results, tmp_path):
    law = user_law(
        power_law_d,
        name="my_power_law",
        variables=("D",),
        columns=("train_tokens",),
        bounds={"E": (1e-3, 10.0), "B": (1e-3, 10.0), "beta": (1e-3, 3.0)},
    )
    result = analyze(make_results(), tmp_path, law=law, target_tokens=1e9, n_boot=30)
    data = _strict_json(result.fits_json.read_text())
    assert data["law"]["name"] == "my_power_law"
    assert data["sources"]["B"]["params"]["beta"] == pytest.approx(0.5, rel=0.1)
    assert data["decision"]["best_source"] == "B"
