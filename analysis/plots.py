"""Report figures, drawn on `matplotlib.figure.Figure` so no pyplot state or backend changes."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib import colormaps
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from annealscale.analysis.budget import Frontier
from annealscale.analysis.compare import TargetDecision, format_tokens
from annealscale.analysis.fit import FitResult
from annealscale.analysis.sources import SourceFits
from annealscale.analysis.validate import Validation

_PANEL_W, _PANEL_H = 4.2, 3.4  # inches
_DPI = 110


def save_png(fig: Figure, path: Path) -> Path:
    """Write ``fig`` as PNG (Agg renderer, chosen by the file type, not the global backend)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format="png", dpi=_DPI)
    return path


def curves(
    finished: pd.DataFrame,
    fits: Mapping[str, SourceFits],
    decision: TargetDecision,
    base_bpb: float | None,
    level: float,
) -> Figure:
    """Domain bpb against training tokens, a panel per source, with the law and its band."""
    sources = sorted(finished["source"].unique())
    fig, axes = _panels(len(sources))
    targets_d = [p.train_tokens for p in decision.predictions.values()]
    d_lo = float(finished["train_tokens"].min()) / 1.25
    d_hi = max([float(finished["train_tokens"].max()), *targets_d]) * 1.25
    d_grid = np.geomspace(d_lo, d_hi, 160)
    q = [(1.0 - level) / 2.0, (1.0 + level) / 2.0]
    for ax, source in zip(axes, sources, strict=True):
        rows = finished[finished["source"] == source]
        spends = sorted(rows["curation_spend"].unique())
        colours = _spend_colours(len(spends))
        sf = fits.get(source)
        fitted = sf is not None and sf.pooled.result is not None
        for colour, spend in zip(colours, spends, strict=True):
            sel = rows[rows["curation_spend"] == spend]
            label = f"spend ${spend:,.4g}"
            ax.scatter(sel["train_tokens"], sel["domain_bpb"], s=18, color=colour, zorder=3)
            if fitted and sf is not None and sf.uses_spend():
                ax.plot(d_grid, sf.predict(d_grid, spend), color=colour, lw=1.3, label=label)
            else:
                fit = _spend_fit(sf, spend)
                if fit is not None:
                    ax.plot(d_grid, fit.predict(d_grid), color=colour, lw=0.9, ls=":", label=label)
                else:
                    ax.plot([], [], color=colour, marker="o", ls="none", label=label)
        pred = decision.predictions.get(source)
        if fitted and sf is not None and pred is not None:
            c = pred.curation_spend
            ax.plot(d_grid, sf.predict(d_grid, c), color="black", lw=1.4, label=f"{sf.law.name}")
            if sf.pooled.bootstrap is not None:
                lo, hi = np.quantile(sf.draws(d_grid, c), q, axis=0)
                ax.fill_between(
                    d_grid, lo, hi, color="black", alpha=0.15, lw=0, label=f"{level:.0%} band"
                )
            ax.errorbar(
                [pred.train_tokens],
                [pred.predicted],
                yerr=[
                    [max(pred.predicted - pred.lower, 0.0)],
                    [max(pred.upper - pred.predicted, 0.0)],
                ],
                fmt="D",
                color="crimson",
                ms=5,
                capsize=3,
                zorder=4,
                label="at target",
            )
            ax.axvline(pred.train_tokens, color="crimson", ls=":", lw=1.0)
        _baseline(ax, base_bpb)
        ax.set(xscale="log", title=source, xlabel="training tokens D", ylabel="domain bpb")
        ax.legend(fontsize=6)
    fig.suptitle(f"Domain bits per byte vs training tokens (target: {decision.target.label})")
    return fig


def cost_frontier(
    front: Frontier, cells: pd.DataFrame, base_bpb: float | None, cost_targets: Sequence[float]
) -> Figure:
    """Predicted metric against total cost per source (best split), with cells and Pareto set."""
    fig = Figure(figsize=(7.2, 4.8), layout="constrained")
    ax = fig.add_subplot()
    colours = colormaps["tab10"]
    for i, (source, curve) in enumerate(sorted(front.curves.items())):
        colour = colours(i % 10)
        ok = np.isfinite(curve["predicted"])
        ax.plot(front.costs[ok], curve["predicted"][ok], color=colour, lw=1.6, label=source)
        band = ok & np.isfinite(curve["lower"]) & np.isfinite(curve["upper"])
        ax.fill_between(
            front.costs[band],
            curve["lower"][band],
            curve["upper"][band],
            color=colour,
            alpha=0.15,
            lw=0,
        )
        sel = cells[cells["source"] == source]
        ax.scatter(sel["total_cost"], sel["domain_bpb"], s=16, color=colour, zorder=3)
    par = front.observed_pareto
    ax.scatter(
        par["total_cost"],
        par["domain_bpb"],
        s=90,
        facecolors="none",
        edgecolors="black",
        linewidths=1.0,
        zorder=4,
        label="Pareto-optimal cells",
    )
    for c in cost_targets:
        ax.axvline(c, color="crimson", ls=":", lw=1.0, label=f"target ${c:,.4g}")
    _baseline(ax, base_bpb)
    ax.set(
        xscale="log",
        xlabel="total cost (USD)",
        ylabel="domain bpb",
        title="Cost-efficiency frontier (each source at its best split of the budget)",
    )
    ax.legend(fontsize=7)
    return fig


def crossovers(td: TargetDecision) -> Figure:
    """Pairwise differences of predicted curves along the target's axis, with crossovers."""
    grid = td.curves["grid"]
    pts = td.curves["predicted"]
    bands = td.curves["draws_interval"]
    names = sorted(pts)
    pairs = [(a, b) for i, a in enumerate(names) for b in names[i + 1 :]]
    fig, axes = _panels(max(len(pairs), 1), sharey=False)
    axis_label = "training tokens D" if td.target.axis == "train_tokens" else "total cost (USD)"
    target_x = (
        td.target.total_cost
        if td.target.total_cost is not None
        else max(p.train_tokens for p in td.predictions.values())
    )
    for ax, (a, b) in zip(axes, pairs, strict=False):
        diff = pts[a] - pts[b]
        ax.plot(grid, diff, color="black", lw=1.4, label=f"{a} - {b}")
        # the band of a difference is not the difference of bands; approximate by both widths
        lo = bands[a][0] - bands[b][1]
        hi = bands[a][1] - bands[b][0]
        ax.fill_between(grid, lo, hi, color="grey", alpha=0.2, lw=0, label="bands combined")
        ax.axhline(0.0, color="grey", lw=0.8)
        for c in td.crossovers:
            if {c.before, c.after} == {a, b}:
                ax.axvspan(c.lower, c.upper, color="tab:orange", alpha=0.25)
                ax.axvline(c.at, color="tab:orange", lw=1.2, ls="-" if c.point_estimate else "--")
                ax.annotate(
                    f"{c.after} overtakes\nat {_fmt(td.target.axis, c.at)}",
                    (c.at, 0.0),
                    textcoords="offset points",
                    xytext=(4, 8),
                    fontsize=7,
                )
        ax.axvline(target_x, color="crimson", ls=":", lw=1.0, label="target")
        ax.set(
            xscale="log", xlabel=axis_label, ylabel="difference in domain bpb", title=f"{a} vs {b}"
        )
        ax.legend(fontsize=6)
    if not pairs:
        axes[0].text(0.5, 0.5, "one source: nothing to compare", ha="center", va="center")
    fig.suptitle("Where the ranking flips: pairwise differences of predicted domain bpb")
    return fig


def held_out(validation: Validation) -> Figure:
    """Predicted against observed domain bpb at the held-out cells, per candidate law."""
    laws = [v for v in validation.laws if v.cells]
    fig, axes = _panels(len(laws), sharey=False)
    for ax, v in zip(axes, laws, strict=True):
        obs = np.array([c.observed for c in v.cells])
        pred = np.array([c.predicted for c in v.cells])
        lo = np.array([c.obs_lower for c in v.cells])
        hi = np.array([c.obs_upper for c in v.cells])
        # a percentile interval need not contain the point estimate: clip, do not fail
        yerr = [np.maximum(pred - lo, 0.0), np.maximum(hi - pred, 0.0)]
        ax.errorbar(obs, pred, yerr=yerr, fmt="o", ms=4, capsize=3)
        for c in v.cells:
            ax.annotate(
                c.source,
                (c.observed, c.predicted),
                fontsize=6,
                xytext=(3, 3),
                textcoords="offset points",
            )
        span = [min(obs.min(), lo.min()), max(obs.max(), hi.max())]
        ax.plot(span, span, color="grey", lw=0.8, ls="--")
        chosen = " (chosen)" if v.law.name == validation.selected.name else ""
        ax.set(
            xlabel="observed domain bpb (held out)",
            ylabel="predicted",
            title=f"{v.law.name}{chosen}: error {v.mean_abs_error:.2%}, {v.coverage:.0%} inside",
        )
        ax.title.set_fontsize(8)
    fig.suptitle("Held-out check: fitted without the largest training budget")
    return fig


def forgetting(finished: pd.DataFrame, cells: pd.DataFrame, base_bpb: float | None) -> Figure:
    """General bpb against training tokens, a panel per source, a colour per spend."""
    sources = sorted(finished["source"].unique())
    fig, axes = _panels(len(sources))
    for ax, source in zip(axes, sources, strict=True):
        rows = finished[finished["source"] == source]
        means = cells[cells["source"] == source]
        spends = sorted(rows["curation_spend"].unique())
        for colour, spend in zip(_spend_colours(len(spends)), spends, strict=True):
            sel = rows[rows["curation_spend"] == spend]
            line = means[means["curation_spend"] == spend].sort_values("train_tokens")
            ax.scatter(sel["train_tokens"], sel["general_bpb"], s=18, color=colour, zorder=3)
            ax.plot(
                line["train_tokens"],
                line["general_bpb"],
                color=colour,
                lw=1.2,
                label=f"spend ${spend:,.4g}",
            )
        _baseline(ax, base_bpb)
        ax.set(xscale="log", title=source, xlabel="training tokens D", ylabel="general bpb")
        ax.legend(fontsize=7)
    fig.suptitle("Forgetting: general bits per byte vs training tokens")
    return fig


def _panels(n: int, *, sharey: bool = True) -> tuple[Figure, Sequence[Axes]]:
    ncols = min(n, 3)
    nrows = math.ceil(n / ncols)
    fig = Figure(figsize=(_PANEL_W * ncols, _PANEL_H * nrows + 0.4), layout="constrained")
    if ncols == 1:  # a lone panel still gets a readable width
        fig.set_size_inches(6.4, _PANEL_H * nrows + 0.6)
    axes = fig.subplots(nrows, ncols, squeeze=False, sharey=sharey).ravel()
    for ax in axes[n:]:
        ax.set_visible(False)
    return fig, axes[:n]


def _spend_colours(n: int) -> list[tuple[float, float, float, float]]:
    cmap = colormaps["viridis"]
    return [cmap(0.85 * i / max(n - 1, 1)) for i in range(n)]


def _spend_fit(sf: SourceFits | None, spend: float) -> FitResult | None:
    if sf is None:
        return None
    for g in sf.per_spend:
        if g.curation_spend == spend:
            return g.result
    return None


def _baseline(ax: Axes, value: float | None) -> None:
    if value is not None:
        ax.axhline(value, color="grey", ls="--", lw=1.0, label=f"base model ({value:.3f})")


def _fmt(axis: str, v: float) -> str:
    return format_tokens(v) if axis == "train_tokens" else f"${v:,.4g}"
