from __future__ import annotations

import pandas as pd
import pytest

from analysis.compare import decide, format_tokens
from analysis.sources import fit_sources
from analysis.table import cell_means, load_results


def _cells(rows: list[tuple[str, float, float, float, float]]) -> pd.DataFrame:
    return pd.DataFrame(
        rows, columns=["source", "curation_spend", "train_tokens", "domain_bpb", "total_cost"]
    ).assign(general_bpb=1.0, n_seeds=1)


def test_cheapest_cell_within_tolerance():
    cells = _cells(
        [
            ("A", 10.0, 1e8, 1.000, 500.0),  # best
            ("A", 10.0, 1e7, 1.009, 80.0),  # within 1 %, cheapest such
            ("B", 5.0, 1e7, 1.011, 20.0),  # cheaper but 1.1 % worse
            ("B", 5.0, 1e8, 1.005, 300.0),
        ]
    )
    d = decide({}, cells, tolerance_pct=1.0)
    assert d.best_cell["total_cost"] == 500.0
    assert d.cheapest_cell_within_tolerance["total_cost"] == 80.0
    strict = decide({}, cells, tolerance_pct=0.0)
    assert strict.cheapest_cell_within_tolerance == strict.best_cell
    loose = decide({}, cells, tolerance_pct=2.0)
    assert loose.cheapest_cell_within_tolerance["source"] == "B"


def test_crossing_curves_flip_the_ranking(results):
    finished = load_results(results).finished
    d = decide(fit_sources(finished), cell_means(finished))
    assert [s for s, _ in d.ranking_at_smallest] == ["A", "B"]
    assert [s for s, _ in d.ranking_at_largest] == ["B", "A"]
    assert (d.micro_annealing_pick, d.best_source, d.ranking_flips) == ("A", "B", True)
    assert any("Micro-annealing would pick A" in m and "B wins" in m for m in d.messages)


def test_no_flip_when_one_source_leads_everywhere(results):
    finished = load_results(results).finished
    only_b = finished[finished["source"] == "B"]
    lagging = only_b.assign(source="C", domain_bpb=only_b["domain_bpb"] * 1.2)
    both = pd.concat([only_b, lagging], ignore_index=True)
    d = decide(fit_sources(both), cell_means(both))
    assert d.ranking_flips is False
    assert not any("Micro-annealing would pick" in m for m in d.messages)
    assert any("agree on B" in m for m in d.messages)


@pytest.mark.parametrize(("n", "text"), [(1e6, "1e6"), (1.5e8, "1.5e8"), (3.16e10, "3.16e10")])
def test_format_tokens(n, text):
    assert format_tokens(n) == text
