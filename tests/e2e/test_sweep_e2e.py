"""One whole sweep on a real local Ray: curation, Ray Data packing, Ray Tune trials that
launch Ray Train + DeepSpeed anneals of a real Hugging Face model, results, analysis."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from annealscale.tune.results import REQUIRED_COLUMNS
from annealscale.tune.spec import parse_spec
from annealscale.tune.sweep import run_sweep
from tests.helpers import TEXTBOOK, eval_section, sweep_spec

pytestmark = pytest.mark.slow

SPENDS = (0.05, 0.2)
TOKENS = (4096, 32768)


def tiny_spec(storage: str) -> dict:
    return sweep_spec(
        storage,
        name="e2e",
        eval=eval_section(4096),
        sources=[
            TEXTBOOK,
            {"name": "synthetic", "kind": "synthetic", "params": {"usd_per_token": 4e-6}},
        ],
        grid={"curation_spend": list(SPENDS), "train_tokens": list(TOKENS)},
        schedule={"peak_lr": 2e-3, "warmup_fraction": 0.1},
        train={"seq_len": 64, "batch_size": 16, "micro_batch_size": 8, "zero_stage": 1},
    )


@pytest.fixture(scope="module")
def sweep(ray_local, tiny_assets, tmp_path_factory):
    root = tmp_path_factory.mktemp("e2e")
    spec = parse_spec(tiny_spec(str(root / "storage")))
    out = root / "out"
    outcome = run_sweep(spec, out, resolve=tiny_assets.resolve)
    return spec, out, outcome


def test_every_cell_finishes_with_one_row_and_the_required_columns(sweep):
    spec, out, outcome = sweep
    table = pd.read_parquet(out / "results.parquet")
    assert outcome.finished == 2 * len(SPENDS) * len(TOKENS) and outcome.failed == 0
    assert len(table) == outcome.finished
    assert set(REQUIRED_COLUMNS) <= set(table.columns)
    assert (table["model_params"] > 0).all() and table["model_params"].nunique() == 1
    assert table["cell_id"].is_unique
    assert (table["status"] == "finished").all()
    assert set(table["source"]) == {"textbook", "synthetic"}


def test_token_accounting_is_exact(sweep):
    spec, out, _ = sweep
    table = pd.read_parquet(out / "results.parquet")
    per_step = spec.train.tokens_per_step
    assert (table["train_tokens"] % per_step == 0).all()
    assert (table["train_tokens"] == (table["requested_train_tokens"] // per_step) * per_step).all()
    assert (table["domain_tokens"] + table["replay_tokens"] == table["train_tokens"]).all()
    expected_domain = np.floor(spec.domain_fraction * table["train_tokens"] / 64 + 0.5) * 64
    assert (table["domain_tokens"] == expected_domain).all()
    repetition = table["domain_tokens"] / table["unique_tokens"]
    assert np.allclose(table["domain_epochs"], repetition)


def test_costs_add_up_and_never_exceed_the_spend(sweep):
    _, out, _ = sweep
    table = pd.read_parquet(out / "results.parquet")
    assert (table["curation_cost"] <= table["curation_spend"] + 1e-12).all()
    assert (table["curation_cost"] > 0.5 * table["curation_spend"]).all()
    assert np.allclose(table["total_cost"], table["curation_cost"] + table["train_cost"])
    small, large = (table[table["train_tokens"] == t]["train_flops"].iloc[0] for t in TOKENS)
    assert large / small == pytest.approx(TOKENS[1] / TOKENS[0], rel=1e-9)


def test_larger_spend_buys_a_larger_pool(sweep):
    _, out, _ = sweep
    table = pd.read_parquet(out / "results.parquet")
    for _, rows in table.groupby("source"):
        pools = rows.groupby("curation_spend")["unique_tokens"].first()
        assert pools.loc[SPENDS[1]] > pools.loc[SPENDS[0]]


def test_anneals_learn_the_domain(sweep):
    _, out, _ = sweep
    table = pd.read_parquet(out / "results.parquet")
    assert (table["domain_bpb"] < table["base_domain_bpb"]).all()
    largest = table[table["curation_spend"] == SPENDS[1]]
    for source, rows in largest.groupby("source"):
        by_tokens = rows.set_index("train_tokens")["domain_bpb"]
        assert by_tokens.loc[TOKENS[1]] < by_tokens.loc[TOKENS[0]], source


def test_analysis_outputs(sweep):
    _, out, _ = sweep
    from annealscale.analysis import analyze

    result = analyze(out / "results.parquet", out)
    fits = json.loads(result.fits_json.read_text())
    assert set(fits["sources"]) == {"textbook", "synthetic"}
    for fit in fits["sources"].values():
        assert fit["law"] == "power_law_D"
        assert set(fit["params"]) == {"E", "B", "beta"}
        assert fit["quality"]["n_points"] == len(SPENDS) * len(TOKENS)
    html = result.report_html.read_text()
    assert html.count("data:image/png;base64,") >= 2


def test_rows_carry_identity_provenance_timestamps_and_attempts(sweep):
    spec, out, _ = sweep
    table = pd.read_parquet(out / "results.parquet")
    provenance = json.loads((out / "provenance.json").read_text())
    assert (table["spec_hash"] == provenance["spec_hash"]).all()
    assert (table["code_version"] == provenance["code_version"]).all()
    assert (table["attempts"] == 1).all()
    assert table["error"].isna().all()
    assert (table["started_at"] < table["finished_at"]).all()
    assert (table["attempt_started_at"] >= table["started_at"] - 1).all()
    assert table["worker_node"].notna().all() and table["driver_node"].notna().all()
    cells = Path(spec.storage_path) / "results" / "cells"
    assert sorted(p.stem for p in cells.glob("*.parquet")) == sorted(table["cell_id"])


def test_trackers_are_off_by_default(sweep):
    spec, _, _ = sweep
    tune_dir = Path(spec.storage_path) / "tune"
    assert list(tune_dir.rglob("result.json"))  # the experiment's own log is kept
    assert not list(tune_dir.rglob("events.out.tfevents*"))


def test_rerun_skips_finished_cells_and_keeps_their_rows(sweep, tiny_assets):
    spec, out, first = sweep
    cells = Path(spec.storage_path) / "results" / "cells"
    before = {p.name: (p.read_bytes(), p.stat().st_mtime_ns) for p in cells.glob("*.parquet")}
    again = run_sweep(spec, out, resolve=tiny_assets.resolve)
    assert again.skipped == first.finished and again.finished == first.finished
    assert again.ran == 0
    after = {p.name: (p.read_bytes(), p.stat().st_mtime_ns) for p in cells.glob("*.parquet")}
    assert after == before
