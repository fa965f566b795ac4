"""The report's figures are readable and draw extrapolation as such: real fits of synthetic
tables, drawn with the Agg renderer, checked by the properties a reader relies on."""

from __future__ import annotations

import itertools

import numpy as np
import pandas as pd
import pytest
from matplotlib.collections import PolyCollection
from matplotlib.figure import Figure
from matplotlib.text import Text

from annealscale.analysis import analyze
from annealscale.analysis.budget import cost_model, frontier
from annealscale.analysis.plots import source_colours
from annealscale.analysis.report import _figures
from annealscale.analysis.table import cell_means, load_results

LEVEL = 0.9
TARGET_TOKENS = 1e10
TARGET_COST = 3e4
TRUTH = {
    "synthetic": {"E": 1.0, "B": 0.3, "beta": 0.2},
    "licensed": {"E": 0.9, "B": 0.5, "beta": 0.3},
    "filtered": {"E": 0.8, "B": 0.8, "beta": 0.45},
}
TOKENS = (1e6, 1e7, 1e8, 1e9)  # three decades
LONG = {  # names as long as real dataset names get
    "A": "synthetic_textbooks_v2_filtered_high_quality_english_only_dedup",
    "B": "common_crawl_math_subset_classifier_score_above_0.8_minhash_dedup",
}


def _all_figures(table: pd.DataFrame, out, **targets) -> tuple[dict[str, Figure], pd.DataFrame]:
    """Every figure `analyze` draws for ``table``, as figures (analyze itself writes PNGs)."""
    result = analyze(table, out, n_boot=100, level=LEVEL, candidates=("power_law_D",), **targets)
    rt = load_results(table)
    cells = cell_means(rt.finished)
    costs, _ = cost_model(rt)
    assert costs is not None
    extra = (targets["target_cost"],) if "target_cost" in targets else ()
    front = frontier(result.fits, costs, cells, level=LEVEL, extra_costs=extra)
    figs = _figures(rt, result.fits, result.decision, result.validation, front, cells, LEVEL)
    assert set(figs) == set(result.plots)
    for fig in figs.values():
        fig.draw_without_rendering()
    return figs, cells


@pytest.fixture(scope="module")
def three(tmp_path_factory, simulate_table):
    table = simulate_table({s: {"params": p} for s, p in TRUTH.items()}, train_tokens=TOKENS)
    out = tmp_path_factory.mktemp("plots")
    return _all_figures(table, out, target_tokens=TARGET_TOKENS, target_cost=TARGET_COST)


def _visible_tick_labels(fig: Figure) -> list[Text]:
    """Labels drawn: matplotlib keeps (undrawn) labels of ticks outside the view."""
    out = []
    for ax in fig.axes:
        for i, axis in enumerate((ax.xaxis, ax.yaxis)):
            lo, hi = sorted(axis.get_view_interval())
            out += [
                t
                for t in axis.get_ticklabels(which="both")
                if t.get_visible() and t.get_text() and lo <= t.get_position()[i] <= hi
            ]
    return out


def _overlapping(texts: list[Text], fig: Figure) -> list[tuple[str, str]]:
    r = fig.canvas.get_renderer()
    boxes = [(t.get_text(), t.get_window_extent(r)) for t in texts]
    return [(a, b) for (a, ba), (b, bb) in itertools.combinations(boxes, 2) if ba.overlaps(bb)]


def _legends(fig: Figure) -> list:
    return [*fig.legends, *(ax.get_legend() for ax in fig.axes if ax.get_legend())]


def _fitted_lines(ax):
    """Curves, not reference lines (axhline/axvline have two points, errorbars one)."""
    return [ln for ln in ax.get_lines() if len(ln.get_xdata()) >= 3]


def _split(pieces, x_of, lo: float, hi: float) -> tuple[list, list]:
    """Pieces wholly inside ``[lo, hi]`` and wholly past it; a piece across an end fails."""
    inside, past = [], []
    for p in pieces:
        x = np.asarray(x_of(p), dtype=float)
        if x.min() >= lo * (1 - 1e-6) and x.max() <= hi * (1 + 1e-6):
            inside.append(p)
        elif x.min() >= hi * (1 - 1e-6) or x.max() <= lo * (1 + 1e-6):
            past.append(p)
        else:
            raise AssertionError(f"a curve spans the edge of the data [{lo:g}, {hi:g}]")
    return inside, past


def _band_x(coll: PolyCollection) -> np.ndarray:
    return np.concatenate([p.vertices[:, 0] for p in coll.get_paths()])


def _bands(ax) -> list[PolyCollection]:
    return [c for c in ax.collections if isinstance(c, PolyCollection) and c.get_paths()]


def _panel_source(ax) -> str:
    return ax.get_title().replace("\n", "")


def test_every_figure_is_drawn(three):
    figs, _ = three
    assert set(figs) == {"curves", "frontier", "crossovers", "held_out", "forgetting"}


@pytest.mark.parametrize("name", ["curves", "frontier", "crossovers", "held_out", "forgetting"])
def test_no_tick_labels_overlap(three, name):
    fig = three[0][name]
    labels = _visible_tick_labels(fig)
    assert len(labels) >= 4
    assert _overlapping(labels, fig) == []
    titles = [ax.title for ax in fig.axes if ax.get_title()]
    assert _overlapping(titles, fig) == []


@pytest.mark.parametrize("name", ["curves", "frontier", "crossovers", "forgetting"])
def test_log_axes_carry_short_plain_labels(three, name):
    for ax in three[0][name].axes:
        assert ax.get_xscale() == "log"
        texts = [t.get_text() for t in ax.xaxis.get_ticklabels(which="both") if t.get_text()]
        assert texts, "a log axis without labels"
        for text in texts:
            assert len(text) <= 6 and "\\" not in text, text  # no mathtext, no long numbers
        assert all(not t.get_text() for t in ax.xaxis.get_ticklabels(which="minor"))


@pytest.mark.parametrize("name", ["curves", "frontier", "crossovers", "held_out", "forgetting"])
def test_legends_are_legible_and_off_the_data(three, name):
    fig = three[0][name]
    legends = _legends(fig)
    assert legends
    for legend in legends:
        for text in [*legend.get_texts(), legend.get_title()]:
            if text.get_text():
                assert text.get_fontsize() >= 8
        assert len(legend.get_texts()) <= 8  # few entries wherever `loc="best"` may place it
    r = fig.canvas.get_renderer()
    for legend in fig.legends:  # figure legends sit outside every panel
        box = legend.get_window_extent(r)
        assert not any(box.overlaps(ax.get_window_extent(r)) for ax in fig.axes)


def test_curves_are_dashed_and_lighter_past_the_sampled_tokens(three):
    figs, cells = three
    fig = figs["curves"]
    for ax in fig.axes:
        source = _panel_source(ax)
        d = cells.loc[cells["source"] == source, "train_tokens"]
        lo, hi = float(d.min()), float(d.max())
        inside, past = _split(_fitted_lines(ax), lambda ln: ln.get_xdata(), lo, hi)
        assert inside and past
        assert {ln.get_linestyle() for ln in inside} == {"-"}
        assert {ln.get_linestyle() for ln in past} == {"--"}
        assert all((ln.get_alpha() or 1.0) < 1.0 for ln in past)
        band_in, band_past = _split(_bands(ax), _band_x, lo, hi)
        assert band_in and band_past
        assert max(b.get_alpha() for b in band_past) < min(b.get_alpha() for b in band_in)
        # drawn to the target and a little past it, not a decade further
        assert TARGET_TOKENS <= ax.get_xlim()[1] <= 1.5 * TARGET_TOKENS
        labels = [t.get_text() for t in ax.texts]
        assert "extrapolated" in labels


def test_frontier_is_dashed_past_the_dearest_observed_cell(three):
    figs, cells = three
    ax = figs["frontier"].axes[0]
    colour_of = {c: s for s, c in source_colours(cells["source"]).items()}
    lines = _fitted_lines(ax)
    assert {colour_of[ln.get_color()] for ln in lines} == set(TRUTH)
    for source in TRUTH:
        own = [ln for ln in lines if colour_of[ln.get_color()] == source]
        dearest = float(cells.loc[cells["source"] == source, "total_cost"].max())
        inside, past = _split(own, lambda ln: ln.get_xdata(), 0.0, dearest)
        assert inside and past
        assert {ln.get_linestyle() for ln in inside} == {"-"}
        assert {ln.get_linestyle() for ln in past} == {"--"}
    assert TARGET_COST <= ax.get_xlim()[1] <= 1.5 * TARGET_COST
    assert "extrapolated" in [t.get_text() for t in ax.texts]
    band_in, band_past = _split(_bands(ax), _band_x, 0.0, float(cells["total_cost"].max()))
    assert band_past and max(b.get_alpha() for b in band_past) < min(b.get_alpha() for b in band_in)


def test_a_source_keeps_its_colour_across_figures(three):
    figs, cells = three
    colours = source_colours(cells["source"])
    frontier_colours = {ln.get_color() for ln in _fitted_lines(figs["frontier"].axes[0])}
    assert frontier_colours == set(colours.values())
    for ax in figs["curves"].axes:
        widest = max(_fitted_lines(ax), key=lambda ln: ln.get_linewidth())
        assert widest.get_color() == colours[_panel_source(ax)]
    held = figs["held_out"].legends[0]
    by_label = {t.get_text(): h for t, h in zip(held.get_texts(), held.legend_handles, strict=True)}
    for source, colour in colours.items():
        assert by_label[source].get_color() == colour


def test_long_source_names_are_drawn_whole_without_overlap(make_results, tmp_path):
    table = make_results()
    table["source"] = table["source"].map(LONG)
    figs, _ = _all_figures(table, tmp_path, target_tokens=1e9)
    for name, fig in figs.items():
        assert _overlapping(_visible_tick_labels(fig), fig) == [], name
        titles = [ax.title for ax in fig.axes if ax.get_title()]
        assert _overlapping(titles, fig) == [], name
        r = fig.canvas.get_renderer()
        page = fig.bbox
        for text in [*titles, *(t for lg in _legends(fig) for t in lg.get_texts())]:
            box = text.get_window_extent(r)
            assert page.x0 - 1 <= box.x0 and box.x1 <= page.x1 + 1, text.get_text()
    shown = " ".join(
        t.get_text().replace("\n", "")
        for fig in figs.values()
        for t in fig.findobj(Text)
        if t.get_visible()
    )
    for long_name in LONG.values():
        assert long_name in shown
