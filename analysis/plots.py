"""Report figures, drawn on `matplotlib.figure.Figure` so no pyplot state or backend changes.

Conventions shared by every figure:

- each source keeps one colour (`source_colours`, by sorted name) in every figure;
- a fitted curve is solid over the sampled range of its variable and dashed and lighter
  beyond it, its band likewise; the region past the data is shaded and labelled;
- curves stop a modest margin (`_REACH`) past the largest target or sampled value;
- log axes carry few, short labels (``1e6``, ``3e7``; ``$300``, ``$1.5k``), and a figure
  is laid out and its tick labels thinned until none overlap (`_declutter`).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib import colormaps
from matplotlib.axes import Axes
from matplotlib.axis import Axis
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.colors import to_rgb
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch
from matplotlib.text import Text
from matplotlib.ticker import FixedLocator, FuncFormatter, LogLocator, NullFormatter

from annealscale.analysis.budget import Frontier
from annealscale.analysis.compare import TargetDecision, format_tokens
from annealscale.analysis.fit import FitResult
from annealscale.analysis.link import LinkFit, sigmoid_link
from annealscale.analysis.sources import SourceFits
from annealscale.analysis.validate import Validation

_PANEL_W, _PANEL_H = 4.4, 3.4  # inches
_DPI = 110
_FONT = 9  # points, legends and annotations; 9 pt is 14 px at _DPI
_REACH = 1.25  # curves end this factor past the largest target or sampled value
_EXTRAPOLATED_ALPHA = 0.5  # line opacity past the data
_BAND_ALPHA = (0.22, 0.08)  # band opacity (inside, past) the data
_SHADE = "0.93"  # background of the extrapolated region
_TARGET = "crimson"
_MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*")
_WRAP = 40  # characters per title line in a panel


def save_png(fig: Figure, path: Path) -> Path:
    """Write ``fig`` as PNG (Agg renderer, chosen by the file type, not the global backend)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format="png", dpi=_DPI)
    return path


def source_colours(names: Iterable[str]) -> dict[str, tuple[float, float, float]]:
    """A colour per source: ``tab10`` (``tab20`` past ten sources) in sorted-name order.

    Every figure passes all the table's sources, so a source keeps its colour across them.
    """
    ordered = sorted(set(names))
    cmap = colormaps["tab10" if len(ordered) <= 10 else "tab20"]
    return {s: to_rgb(cmap(i % cmap.N)) for i, s in enumerate(ordered)}


def curves(
    finished: pd.DataFrame,
    fits: Mapping[str, SourceFits],
    decision: TargetDecision,
    base_bpb: float | None,
    level: float,
    metric: str = "domain_bpb",
    label: str = "domain bpb",
) -> Figure:
    """Domain bpb (or the fitted ``metric``, named ``label``) against training tokens, a
    panel per source, with the law and its band.

    Each source's law is solid over its sampled training tokens and dashed beyond; the
    curve at the target's spend is dashed throughout when that spend was not sampled.
    """
    sources = sorted(finished["source"].unique())
    colours = source_colours(sources)
    fig, axes = _panels(len(sources))
    targets_d = [p.train_tokens for p in decision.predictions.values()]
    d_lo = float(finished["train_tokens"].min()) / _REACH
    d_hi = max([float(finished["train_tokens"].max()), *targets_d]) * _REACH
    q = [(1.0 - level) / 2.0, (1.0 + level) / 2.0]
    law_name = ""
    for ax, source in zip(axes, sources, strict=True):
        rows = finished[finished["source"] == source]
        sampled = (float(rows["train_tokens"].min()), float(rows["train_tokens"].max()))
        d_grid = _grid(d_lo, d_hi, sampled)
        spends = sorted(rows["curation_spend"].unique())
        shades = _shades(colours[source], len(spends))
        sf = fits.get(source)
        fitted = sf is not None and sf.pooled.result is not None
        for k, (shade, spend) in enumerate(zip(shades, spends, strict=True)):
            sel = rows[rows["curation_spend"] == spend]
            marker = _MARKERS[k % len(_MARKERS)]
            ax.scatter(
                sel["train_tokens"],
                sel[metric],
                s=22,
                color=shade,
                marker=marker,
                edgecolors="white",
                linewidths=0.4,
                zorder=3,
                label=_usd(spend),
            )
            if fitted and sf is not None and sf.uses_spend():
                _law_line(ax, d_grid, sf.predict(d_grid, spend), sampled, color=shade, lw=0.9)
            else:
                fit = _spend_fit(sf, spend)
                if fit is not None:
                    sel_d = (float(sel["train_tokens"].min()), float(sel["train_tokens"].max()))
                    grid = _grid(d_lo, d_hi, sel_d)
                    _law_line(ax, grid, fit.predict(grid), sel_d, color=shade, lw=0.8)
        pred = decision.predictions.get(source)
        if fitted and sf is not None and pred is not None:
            law_name = sf.law.name if sf.law is not None else ""
            c = pred.curation_spend
            spend_sampled = min(spends) * (1 - 1e-9) <= c <= max(spends) * (1 + 1e-9)
            inside = sampled if spend_sampled else None
            if sf.pooled.bootstrap is not None:
                lo, hi = np.quantile(sf.draws(d_grid, c), q, axis=0)
                _band(ax, d_grid, lo, hi, inside, color=colours[source])
            _law_line(ax, d_grid, sf.predict(d_grid, c), inside, color=colours[source], lw=1.8)
            ax.errorbar(
                [pred.train_tokens],
                [pred.predicted],
                yerr=[
                    [max(pred.predicted - pred.lower, 0.0)],
                    [max(pred.upper - pred.predicted, 0.0)],
                ],
                fmt="D",
                color=_TARGET,
                ms=5,
                capsize=3,
                zorder=5,
            )
            ax.axvline(pred.train_tokens, color=_TARGET, ls=":", lw=1.0)
        _baseline(ax, base_bpb)
        ax.set_xscale("log")
        ax.set_xlim(d_lo, d_hi)
        _shade_beyond(ax, sampled[1])
        ax.set(
            title=_wrap(source),
            xlabel="training tokens D (tokens)",
            ylabel=f"{label} (bits per byte)",
        )
        _log_axis(ax.xaxis, _tokens)
        ax.legend(fontsize=_FONT, loc="best", title="curation spend", title_fontsize=_FONT)
    handles = [
        Line2D([], [], color="0.3", lw=1.8, label=f"{law_name or 'law'} fit, within sampled D"),
        Line2D(
            [], [], color="0.3", lw=1.8, ls="--", alpha=_EXTRAPOLATED_ALPHA, label="extrapolated"
        ),
        Line2D([], [], color="0.3", lw=0.8, label="fit per spend"),
        Patch(color="0.3", alpha=_BAND_ALPHA[0], lw=0, label=f"{level:.0%} band at target spend"),
        Line2D([], [], color=_TARGET, marker="D", ms=5, ls=":", lw=1.0, label="at target"),
        *_baseline_handle(base_bpb),
    ]
    _figure_legend(fig, handles)
    title = "Domain bits per byte" if metric == "domain_bpb" else label
    fig.suptitle(f"{title} vs training tokens, per source (target: {decision.target.label})")
    _declutter(fig)
    return fig


def cost_frontier(
    front: Frontier, cells: pd.DataFrame, base_bpb: float | None, cost_targets: Sequence[float]
) -> Figure:
    """Predicted metric against total cost per source (best split), with cells and Pareto set.

    A source's frontier is solid up to its dearest observed cell and dashed beyond; the
    region past every observed cell is shaded. Budgets past the largest cost target (or
    the dearest cell) by more than `_REACH` are not drawn.
    """
    fig = Figure(figsize=(7.6, 5.2), layout="constrained", dpi=_DPI)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    colours = source_colours([*front.curves, *cells["source"].astype(str)])
    dearest = float(cells["total_cost"].max())
    c_hi = max([dearest, *cost_targets]) * _REACH
    c_lo = min(float(front.costs[0]), float(cells["total_cost"].min())) / 1.1
    shown = front.costs <= c_hi
    # one point past the edge, so each curve reaches it
    shown[: min(int(shown.sum()) + 1, len(shown))] = True
    handles: list = []
    for source, curve in sorted(front.curves.items()):
        colour = colours[source]
        sel = cells[cells["source"] == source]
        own = (0.0, float(sel["total_cost"].max())) if len(sel) else None
        x = front.costs[shown]
        _band(ax, x, curve["lower"][shown], curve["upper"][shown], own, color=colour)
        _law_line(ax, x, curve["predicted"][shown], own, color=colour, lw=1.8)
        ax.scatter(sel["total_cost"], sel["domain_bpb"], s=18, color=colour, zorder=3)
        handles.append(Line2D([], [], color=colour, lw=1.8, marker="o", ms=4, label=source))
    par = front.observed_pareto
    ax.scatter(
        par["total_cost"],
        par["domain_bpb"],
        s=90,
        facecolors="none",
        edgecolors="black",
        linewidths=1.0,
        zorder=4,
    )
    handles += [
        Line2D(
            [], [], color="none", marker="o", ms=9, mfc="none", mec="black", label="Pareto cells"
        ),
        Line2D(
            [], [], color="0.3", lw=1.8, ls="--", alpha=_EXTRAPOLATED_ALPHA, label="extrapolated"
        ),
    ]
    for c in cost_targets:
        ax.axvline(c, color=_TARGET, ls=":", lw=1.2)
        handles.append(Line2D([], [], color=_TARGET, ls=":", lw=1.2, label=f"target {_usd(c)}"))
    _baseline(ax, base_bpb)
    handles += _baseline_handle(base_bpb)
    ax.set_xscale("log")
    ax.set_xlim(c_lo, c_hi)
    _shade_beyond(ax, dearest)
    ax.set(
        xlabel="total cost, curation + training (USD)",
        ylabel="predicted domain bpb (bits per byte)",
        title="Cost-efficiency frontier: each source at its best split of the budget",
    )
    _log_axis(ax.xaxis, _usd)
    _figure_legend(fig, handles)
    _declutter(fig)
    return fig


def crossovers(td: TargetDecision) -> Figure:
    """Pairwise differences of predicted curves along the target's axis, with crossovers."""
    grid = td.curves["grid"]
    pts = td.curves["predicted"]
    bands = td.curves["draws_interval"]
    names = sorted(pts)
    colours = source_colours([*td.predictions, *td.unranked, *names])
    pairs = [(a, b) for i, a in enumerate(names) for b in names[i + 1 :]]
    fig, axes = _panels(max(len(pairs), 1), sharey=False)
    tokens_axis = td.target.axis == "train_tokens"
    axis_label = "training tokens D (tokens)" if tokens_axis else "total cost (USD)"
    fmt = _tokens if tokens_axis else _usd
    target_x = (
        td.target.total_cost
        if td.target.total_cost is not None
        else max(p.train_tokens for p in td.predictions.values())
    )
    x_hi = min(
        float(grid[-1]),
        _REACH * max([target_x, *(c.at for c in td.crossovers if c.at <= grid[-1])]),
    )
    shown = grid <= x_hi
    shown[: min(int(shown.sum()) + 1, len(shown))] = True
    g = grid[shown]
    for ax, (a, b) in zip(axes, pairs, strict=False):
        diff = (pts[a] - pts[b])[shown]
        # the band of a difference is not the difference of bands; approximate by both widths
        lo = (bands[a][0] - bands[b][1])[shown]
        hi = (bands[a][1] - bands[b][0])[shown]
        ax.fill_between(g, lo, hi, color="grey", alpha=0.25, lw=0)
        ax.plot(g, diff, color="black", lw=1.5)
        ax.axhline(0.0, color="grey", lw=0.8)
        for c in td.crossovers:
            if {c.before, c.after} == {a, b}:
                ax.axvspan(c.lower, c.upper, color="tab:orange", alpha=0.25, lw=0)
                ax.axvline(c.at, color="tab:orange", lw=1.2, ls="-" if c.point_estimate else "--")
                ax.annotate(
                    _wrap(f"{c.after} overtakes at {fmt(c.at)}", 24),
                    (c.at, 0.0),
                    textcoords="offset points",
                    xytext=(4, 6),
                    fontsize=_FONT - 1,
                    color=_darken(colours[c.after]),
                )
        ax.axvline(target_x, color=_TARGET, ls=":", lw=1.2)
        ax.set_xscale("log")
        ax.set_xlim(float(g[0]), x_hi)
        ax.set(xlabel=axis_label, ylabel="difference in domain bpb", title=_wrap(f"{a} − {b}"))
        for y, leader, va in ((0.03, a, "bottom"), (0.97, b, "top")):
            ax.text(
                0.5,
                y,
                _wrap(f"{leader} leads", 30),
                transform=ax.transAxes,
                ha="center",
                va=va,
                fontsize=_FONT - 1,
                color=_darken(colours[leader]),
                bbox={"facecolor": "white", "alpha": 0.7, "lw": 0, "pad": 1.0},
            )
        _log_axis(ax.xaxis, fmt)
    if not pairs:
        axes[0].text(0.5, 0.5, "one source: nothing to compare", ha="center", va="center")
    handles = [
        Line2D([], [], color="black", lw=1.5, label="difference (first − second)"),
        Patch(color="grey", alpha=0.25, lw=0, label=f"{td.level:.0%} bands combined"),
        Patch(color="tab:orange", alpha=0.4, lw=0, label="crossover and its interval"),
        Line2D([], [], color=_TARGET, ls=":", lw=1.2, label="target"),
    ]
    _figure_legend(fig, handles)
    fig.suptitle("Where the ranking flips: pairwise differences of predicted domain bpb")
    _declutter(fig)
    return fig


def held_out(validation: Validation) -> Figure:
    """Predicted against observed domain bpb at the held-out cells, per candidate law."""
    laws = [v for v in validation.laws if v.cells]
    everyone = [c.source for v in validation.laws for c in v.cells]
    colours = source_colours([*everyone, *(s for v in validation.laws for s in v.skipped)])
    fig, axes = _panels(len(laws), sharey=False)
    for ax, v in zip(axes, laws, strict=True):
        for source in v.sources:
            cells = [c for c in v.cells if c.source == source]
            obs = np.array([c.observed for c in cells])
            pred = np.array([c.predicted for c in cells])
            lo = np.array([c.obs_lower for c in cells])
            hi = np.array([c.obs_upper for c in cells])
            # a percentile interval need not contain the point estimate: clip, do not fail
            yerr = [np.maximum(pred - lo, 0.0), np.maximum(hi - pred, 0.0)]
            ax.errorbar(obs, pred, yerr=yerr, fmt="o", ms=4, capsize=3, color=colours[source])
        obs = np.array([c.observed for c in v.cells])
        lo = np.array([c.obs_lower for c in v.cells])
        hi = np.array([c.obs_upper for c in v.cells])
        span = [min(obs.min(), lo.min()), max(obs.max(), hi.max())]
        ax.plot(span, span, color="grey", lw=0.8, ls="--")
        chosen = " (chosen)" if v.law.name == validation.selected.name else ""
        ax.set(
            xlabel="observed domain bpb (held out)",
            ylabel="predicted domain bpb",
            title=_wrap(
                f"{v.law.name}{chosen}: mean error {v.mean_abs_error:.2%}, "
                f"{v.coverage:.0%} inside interval"
            ),
        )
    handles = [
        *(
            Line2D([], [], color=colours[s], marker="o", ms=4, ls="none", label=s)
            for s in sorted(set(everyone))
        ),
        Line2D([], [], color="grey", lw=0.8, ls="--", label="predicted = observed"),
    ]
    _figure_legend(fig, handles)
    fig.suptitle(
        "Held-out check: each law fitted without the largest training budget, predicting it"
    )
    _declutter(fig)
    return fig


def forgetting(finished: pd.DataFrame, cells: pd.DataFrame, base_bpb: float | None) -> Figure:
    """General bpb against training tokens, a panel per source, a shade per spend."""
    sources = sorted(finished["source"].unique())
    colours = source_colours(sources)
    fig, axes = _panels(len(sources))
    for ax, source in zip(axes, sources, strict=True):
        rows = finished[finished["source"] == source]
        means = cells[cells["source"] == source]
        spends = sorted(rows["curation_spend"].unique())
        shades = _shades(colours[source], len(spends))
        for k, (shade, spend) in enumerate(zip(shades, spends, strict=True)):
            sel = rows[rows["curation_spend"] == spend]
            line = means[means["curation_spend"] == spend].sort_values("train_tokens")
            marker = _MARKERS[k % len(_MARKERS)]
            ax.scatter(
                sel["train_tokens"], sel["general_bpb"], s=20, color=shade, marker=marker, zorder=3
            )
            ax.plot(
                line["train_tokens"],
                line["general_bpb"],
                color=shade,
                lw=1.2,
                marker=marker,
                ms=0,
                label=_usd(spend),
            )
        _baseline(ax, base_bpb)
        ax.set_xscale("log")
        ax.set(
            title=_wrap(source),
            xlabel="training tokens D (tokens)",
            ylabel="general bpb (bits per byte)",
        )
        _log_axis(ax.xaxis, _tokens)
        ax.legend(fontsize=_FONT, loc="best", title="curation spend", title_fontsize=_FONT)
    _figure_legend(
        fig,
        [
            Line2D([], [], color="0.3", lw=1.2, label="mean over seeds"),
            *_baseline_handle(base_bpb),
        ],
    )
    fig.suptitle("Forgetting: general bits per byte vs training tokens, per source")
    _declutter(fig)
    return fig


def _panels(n: int, *, sharey: bool = True) -> tuple[Figure, Sequence[Axes]]:
    ncols = min(n, 3)
    nrows = math.ceil(n / ncols)
    width = _PANEL_W * ncols if ncols > 1 else 6.4  # a lone panel still gets a readable width
    fig = Figure(figsize=(width, _PANEL_H * nrows + 1.0), layout="constrained", dpi=_DPI)
    FigureCanvasAgg(fig)
    axes = fig.subplots(nrows, ncols, squeeze=False, sharey=sharey).ravel()
    for ax in axes[n:]:
        fig.delaxes(ax)
    if sharey:  # a deleted neighbour must not leave a panel without its y tick labels
        for ax in axes[:n]:
            ax.yaxis.set_tick_params(labelleft=True)
    return fig, axes[:n]


def _grid(lo: float, hi: float, sampled: tuple[float, float], n: int = 160) -> np.ndarray:
    """A log grid over ``[lo, hi]`` that holds the sampled range's ends exactly."""
    ends = [v for v in sampled if lo < v < hi]
    return np.unique(np.concatenate([np.geomspace(lo, hi, n), ends]))


def _pieces(
    x: np.ndarray, ys: Sequence[np.ndarray], inside: tuple[float, float] | None
) -> list[tuple[bool, np.ndarray, list[np.ndarray]]]:
    """Split curves ``ys`` over ``x`` (ascending) at the ends of ``inside``: a list of
    ``(within, x, ys)`` pieces sharing their end points (interpolated in log x), so the
    solid and dashed parts meet. ``inside=None`` marks everything as past the data."""
    x = np.asarray(x, dtype=float)
    ys = [np.asarray(y, dtype=float) for y in ys]
    if inside is None:
        return [(False, x, ys)]
    lo, hi = inside
    cuts = [v for v in (lo, hi) if x[0] < v < x[-1] and not np.any(np.isclose(x, v))]
    if cuts:
        grid = np.sort(np.concatenate([x, cuts]))
        ys = [np.interp(np.log(grid), np.log(x), y) for y in ys]
        x = grid
    tol = 1e-9
    below = x <= lo * (1 + tol)
    within = (x >= lo * (1 - tol)) & (x <= hi * (1 + tol))
    above = x >= hi * (1 - tol)
    out = []
    for flag, mask in ((False, below), (True, within), (False, above)):
        if mask.sum() >= 2:
            out.append((flag, x[mask], [y[mask] for y in ys]))
    return out


def _law_line(
    ax: Axes,
    x: np.ndarray,
    y: np.ndarray,
    inside: tuple[float, float] | None,
    *,
    color: tuple[float, float, float],
    lw: float,
) -> None:
    """``y(x)`` solid within ``inside``, dashed and lighter past it."""
    for within, px, (py,) in _pieces(x, [y], inside):
        if within:
            ax.plot(px, py, color=color, lw=lw, ls="-", zorder=2)
        else:
            ax.plot(px, py, color=color, lw=lw, ls="--", alpha=_EXTRAPOLATED_ALPHA, zorder=2)


def _band(
    ax: Axes,
    x: np.ndarray,
    lo: np.ndarray,
    hi: np.ndarray,
    inside: tuple[float, float] | None,
    *,
    color: tuple[float, float, float],
) -> None:
    """An interval band, lighter past ``inside``."""
    for within, px, (plo, phi) in _pieces(x, [lo, hi], inside):
        ok = np.isfinite(plo) & np.isfinite(phi)
        alpha = _BAND_ALPHA[0] if within else _BAND_ALPHA[1]
        ax.fill_between(px, plo, phi, where=ok, color=color, alpha=alpha, lw=0, zorder=1)


def _shade_beyond(ax: Axes, x0: float) -> None:
    """Shade and label the region right of ``x0`` (past every sample) up to the x limit."""
    right = ax.get_xlim()[1]
    if right <= x0 * 1.01:
        return
    left = ax.get_xlim()[0]
    ax.axvspan(x0, right, color=_SHADE, lw=0, zorder=0)
    ax.set_xlim(left, right)
    narrow = math.log(right / x0) < 0.2 * math.log(right / left)  # too narrow for the word
    ax.text(
        math.sqrt(x0 * right),
        0.99,
        "extrapolated",
        transform=ax.get_xaxis_transform(),
        ha="center",
        va="top",
        rotation=90 if narrow else 0,
        fontsize=_FONT - 1,
        color="0.35",
        style="italic",
    )


def _log_axis(axis: Axis, fmt: Callable[[float], str]) -> None:
    """Few major ticks (1 and 3 per decade over short spans), short labels, no minor labels."""
    lo, hi = sorted(axis.get_view_interval())
    decades = math.log10(hi / lo) if lo > 0 else 3.0
    subs = (1.0, 2.0, 5.0) if decades < 1.2 else (1.0, 3.0) if decades < 3.5 else (1.0,)
    axis.set_major_locator(LogLocator(base=10.0, subs=subs))
    axis.set_minor_locator(LogLocator(base=10.0, subs=tuple(range(1, 10))))
    axis.set_major_formatter(FuncFormatter(lambda v, _pos: fmt(v)))
    axis.set_minor_formatter(NullFormatter())


def _declutter(fig: Figure) -> None:
    """Lay out ``fig`` and thin (then rotate) the tick labels of any axis whose labels overlap."""
    fig.draw_without_rendering()
    for ax in fig.axes:
        for axis in (ax.xaxis, ax.yaxis):
            stride = 1
            while _overlapping(axis):
                locs = [float(v) for v in axis.get_majorticklocs()]
                lo, hi = sorted(axis.get_view_interval())
                locs = [v for v in locs if lo <= v <= hi]
                stride += 1
                if stride > max(len(locs), 2):
                    if axis is ax.xaxis:
                        axis.set_tick_params(labelrotation=30)
                        for label in axis.get_ticklabels():
                            label.set_horizontalalignment("right")
                        fig.draw_without_rendering()
                    break
                axis.set_major_locator(FixedLocator(locs[::stride]))
                fig.draw_without_rendering()


def _overlapping(axis: Axis) -> bool:
    renderer = axis.figure.canvas.get_renderer()
    boxes = [t.get_window_extent(renderer) for t in _shown_tick_labels(axis)]
    return any(a.overlaps(b) for i, a in enumerate(boxes) for b in boxes[i + 1 :])


def _shown_tick_labels(axis: Axis) -> list[Text]:
    """The tick labels drawn: visible, not empty, at a tick inside the view (matplotlib keeps
    labels of ticks outside it, undrawn)."""
    lo, hi = sorted(axis.get_view_interval())
    i = 0 if axis.axis_name == "x" else 1
    return [
        t
        for t in axis.get_ticklabels(which="both")
        if t.get_visible() and t.get_text() and lo <= t.get_position()[i] <= hi
    ]


def _figure_legend(fig: Figure, handles: list) -> None:
    """One legend for the whole figure, below the panels (never over the data)."""
    if not handles:
        return
    width_pt = fig.get_figwidth() * 72
    longest = max(len(h.get_label()) for h in handles)
    entry_pt = longest * _FONT * 0.55 + 40  # text, handle and padding
    ncols = max(1, min(len(handles), 4, int(width_pt // entry_pt)))
    fig.legend(handles=handles, loc="outside lower center", ncols=ncols, fontsize=_FONT)


def _shades(colour: tuple[float, float, float], n: int) -> list[tuple[float, float, float]]:
    """``n`` shades of one colour, light to dark (spends of one source)."""
    if n == 1:
        return [colour]
    rgb = np.asarray(colour)
    out = []
    for t in np.linspace(-0.45, 0.35, n):  # < 0: towards white, > 0: towards black
        mixed = rgb + (1.0 - rgb) * -t if t < 0 else rgb * (1.0 - t)
        out.append(tuple(float(v) for v in mixed))
    return out


def _darken(colour: tuple[float, float, float], by: float = 0.25) -> tuple[float, float, float]:
    r, g, b = colour
    return (r * (1 - by), g * (1 - by), b * (1 - by))


def _spend_fit(sf: SourceFits | None, spend: float) -> FitResult | None:
    if sf is None:
        return None
    for g in sf.per_spend:
        if g.curation_spend == spend:
            return g.result
    return None


def _baseline(ax: Axes, value: float | None) -> None:
    if value is not None:
        ax.axhline(value, color="grey", ls="--", lw=1.0)


def _baseline_handle(value: float | None) -> list[Line2D]:
    if value is None:
        return []
    return [Line2D([], [], color="grey", ls="--", lw=1.0, label=f"base model ({value:.3f})")]


def _wrap(text: str, width: int = _WRAP) -> str:
    """Break ``text`` into lines of about ``width`` characters at spaces, ``_``, ``-`` or
    ``/`` (source names are never cut short)."""
    parts, part = [], ""
    for ch in text:
        part += ch
        if ch in " _-/":
            parts.append(part)
            part = ""
    parts.append(part)
    lines, line = [], ""
    for part in parts:
        if line and len(line) + len(part.rstrip()) > width:
            lines.append(line.rstrip())
            line = ""
        line += part
    lines.append(line.rstrip())
    return "\n".join(lines)


def _tokens(v: float) -> str:
    return format_tokens(v)


def _usd(v: float) -> str:
    """``$50``, ``$300``, ``$1.5k``, ``$20k``, ``$3M``."""
    for scale, suffix in ((1e9, "B"), (1e6, "M"), (1e3, "k")):
        if abs(v) >= scale:
            return f"${v / scale:.3g}{suffix}"
    return f"${v:.3g}"


def link(
    cells: pd.DataFrame,
    loss: str,
    score: str,
    fit: LinkFit,
    decision: TargetDecision,
    loss_decision: TargetDecision,
    level: float,
    label: str,
) -> Figure:
    """Step 2 of a two-step law: accuracy against the task's loss for every cell (a colour
    per source), the fitted link with its bootstrap band, and each source's prediction at
    the target (loss interval across, accuracy interval up)."""
    fig = Figure(figsize=(7.6, 5.2), layout="constrained", dpi=_DPI)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    colours = source_colours(cells["source"].astype(str))
    preds = [p for p in loss_decision.predictions.values()]
    lo_x = min([float(cells[loss].min()), *(p.lower for p in preds)])
    hi_x = max([float(cells[loss].max()), *(p.upper for p in preds)])
    pad = 0.08 * max(hi_x - lo_x, 1e-3)
    grid = np.linspace(lo_x - pad, hi_x + pad, 200)
    q = [(1.0 - level) / 2.0, (1.0 + level) / 2.0]
    band = np.quantile(sigmoid_link(grid, fit.draws), q, axis=0)
    ax.axvspan(grid[0], fit.loss_range[0], color=_SHADE, zorder=0)
    ax.fill_between(grid, band[0], band[1], color="0.3", alpha=_BAND_ALPHA[0], lw=0)
    ax.plot(grid, fit.predict(grid), color="0.2", lw=1.8)
    for s, rows in cells.groupby("source", sort=True):
        ax.scatter(rows[loss], rows[score], s=20, color=colours[str(s)], zorder=3, label=str(s))
    for s, p in decision.predictions.items():
        lp = loss_decision.predictions.get(s)
        if lp is None:
            continue
        ax.errorbar(
            [lp.predicted],
            [p.predicted],
            xerr=[[max(lp.predicted - lp.lower, 0.0)], [max(lp.upper - lp.predicted, 0.0)]],
            yerr=[[max(p.predicted - p.lower, 0.0)], [max(p.upper - p.predicted, 0.0)]],
            fmt="D",
            ms=6,
            color=colours.get(s, _TARGET),
            mec=_TARGET,
            ecolor=_TARGET,
            capsize=3,
            zorder=5,
        )
    handles = [
        Line2D([], [], color="0.2", lw=1.8, label="fitted link (sigmoid)"),
        Patch(color="0.3", alpha=_BAND_ALPHA[0], lw=0, label=f"{level:.0%} band of the link"),
        Line2D([], [], color=_TARGET, marker="D", ms=5, ls="", label="prediction at target"),
        Patch(color=_SHADE, label="below the lowest observed loss"),
    ]
    ax.legend(handles=[*ax.get_legend_handles_labels()[0], *handles], fontsize=_FONT, loc="best")
    ax.set(
        xlabel=f"{label.split(' ')[0]} bpb of the correct answer (task loss)",
        ylabel=label,
        title=_wrap(f"Step 2: {label} vs task loss (target: {decision.target.label})"),
    )
    _declutter(fig)
    return fig
