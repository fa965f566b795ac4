"""Three simulated sources whose true curves cross: the report must see through
micro-annealing and name the right source with the highest probability."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
from scipy.optimize import brentq

from annealscale.analysis import analyze
from annealscale.analysis.laws import power_law_d

# At 1e6 tokens: synthetic 1.30 < licensed 1.40 < filtered 1.60 (micro-annealing's order).
# At 1e9 tokens: filtered 0.836 < licensed 0.963 < synthetic 1.075 (the order at the target).
TRUTH = {
    "synthetic": {"E": 1.0, "B": 0.3, "beta": 0.2},
    "licensed": {"E": 0.9, "B": 0.5, "beta": 0.3},
    "filtered": {"E": 0.8, "B": 0.8, "beta": 0.45},
}
TARGET = 1e9


def true_crossing(a: str, b: str) -> float:
    def f(log_d: float) -> float:
        d = float(np.exp(log_d))
        return float(power_law_d(d, **TRUTH[a]) - power_law_d(d, **TRUTH[b]))

    return float(np.exp(brentq(f, np.log(1e5), np.log(1e10))))


@pytest.fixture(scope="module")
def report(tmp_path_factory, simulate_table):
    table = simulate_table({s: {"params": p} for s, p in TRUTH.items()}, rng_seed=11)
    out = tmp_path_factory.mktemp("three")
    result = analyze(table, out, target_tokens=TARGET, n_boot=300, seed=1)
    return result, json.loads(result.fits_json.read_text()), result.report_html.read_text()


def test_right_source_gets_the_highest_probability(report):
    result, data, _ = report
    target = data["targets"][0]
    assert target["target"]["train_tokens"] == TARGET
    p_best = target["p_best"]
    assert set(p_best) == set(TRUTH)
    assert sum(p_best.values()) == pytest.approx(1.0)
    assert max(p_best, key=p_best.get) == "filtered"
    assert p_best["filtered"] > 0.9
    assert target["recommended"] == "filtered" == result.decision.best_source
    assert target["ranking"] == ["filtered", "licensed", "synthetic"]
    for source, params in TRUTH.items():  # every interval holds the truth at the target
        lo, hi = target["predictions"][source]["interval"]
        assert lo <= float(power_law_d(TARGET, **params)) <= hi


def test_micro_annealing_ranking_is_flagged_wrong(report):
    _, data, html = report
    micro = data["targets"][0]["micro_annealing"]
    assert micro["ranking"] == ["synthetic", "licensed", "filtered"]
    assert micro["pick"] == "synthetic"
    assert micro["ranking_differs_at_target"] is True
    assert data["decision"]["micro_annealing_wrong"] is True
    assert "Micro-annealing would pick synthetic" in html
    assert "the micro-annealing ranking is wrong at the target" in html


def test_crossovers_are_named_with_intervals_holding_the_truth(report):
    _, data, html = report
    crossings = {
        (c["before"], c["after"]): c
        for c in data["targets"][0]["crossovers"]
        if c["point_estimate"]
    }
    assert set(crossings) == {
        ("synthetic", "filtered"),
        ("synthetic", "licensed"),
        ("licensed", "filtered"),
    }
    for (before, after), c in crossings.items():
        truth = true_crossing(before, after)
        assert c["interval"][0] <= truth <= c["interval"][1], (before, after, c, truth)
        assert c["interval"][0] <= c["at"] <= c["interval"][1]
        assert c["between_cheapest_and_target"] is True
        assert c["probability"] > 0.9
    assert re.search(r"Crossover: filtered overtakes synthetic at [0-9.e]+ training tokens", html)


def test_report_leads_with_the_recommendation_and_its_probability(report):
    _, data, html = report
    headline = html.split('<div class="headline">', 1)[1]
    first = re.search(r"<p[^>]*>(.*?)</p>", headline).group(1)
    assert first.startswith("Buy filtered: at 1e9 training tokens")
    assert re.search(r"P\(best\) (\d+%|&gt;99%)", first)
    assert html.index("Buy filtered") < html.index("<h2>")
