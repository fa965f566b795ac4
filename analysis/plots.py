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

from analysis.fit import FitResult
from analysis.sources import SourceFits

_PANEL_W, _PANEL_H = 4.2, 3.4  # inches
_DPI = 110


def save_png(fig: Figure, path: Path) -> Path:
    """Write ``fig`` as PNG (Agg renderer, chosen by the file type, not the global backend)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format="png", dpi=_DPI)
    return path


def domain_vs_tokens(
    finished: pd.DataFrame, fits: Mapping[str, SourceFits], base_bpb: float | None
) -> Figure:
    """Domain bpb against training tokens, a panel per source, a colour per spend, with fits."""
    sources = sorted(finished["source"].unique())
    fig, axes = _panels(len(sources))
    d_grid = _token_grid(finished["train_tokens"])
    for ax, source in zip(axes, sources, strict=True):
        rows = finished[finished["source"] == source]
        spends = sorted(rows["curation_spend"].unique())
        colours = _spend_colours(len(spends))
        sf = fits.get(source)
        for colour, spend in zip(colours, spends, strict=True):
            sel = rows[rows["curation_spend"] == spend]
            ax.scatter(sel["train_tokens"], sel["domain_bpb"], s=18, color=colour, zorder=3)
            fit = _spend_fit(sf, spend)
            label = f"spend ${spend:,.0f}"
            if fit is not None:
                ax.plot(d_grid, fit.predict(d_grid), color=colour, lw=1.4, label=label)
            else:
                ax.plot([], [], color=colour, marker="o", ls="none", label=f"{label} (no fit)")
        if sf is not None and sf.pooled.result is not None:
            ax.plot(
                d_grid,
                sf.pooled.predict(d_grid),
                color="black",
                ls="--",
                lw=1.2,
                label="all spends",
            )
        _baseline(ax, base_bpb)
        ax.set(xscale="log", title=source, xlabel="training tokens D", ylabel="domain bpb")
        ax.legend(fontsize=7)
    fig.suptitle("Domain bits per byte vs training tokens")
    return fig


def cost_efficiency(cells: pd.DataFrame, base_bpb: float | None) -> Figure:
    """Domain bpb against total cost, every source on one axes, best cell per source starred."""
    fig = Figure(figsize=(6.4, 4.4), layout="constrained")
    ax = fig.add_subplot()
    sources = sorted(cells["source"].unique())
    colours = colormaps["tab10"]
    for i, source in enumerate(sources):
        sel = cells[cells["source"] == source]
        colour = colours(i % 10)
        ax.scatter(sel["total_cost"], sel["domain_bpb"], s=22, color=colour, label=source)
        best = sel.loc[sel["domain_bpb"].idxmin()]
        ax.scatter(
            [best["total_cost"]],
            [best["domain_bpb"]],
            s=220,
            marker="*",
            color=colour,
            edgecolors="black",
            linewidths=0.8,
            zorder=4,
        )
        ax.annotate(
            f"best {source}",
            (best["total_cost"], best["domain_bpb"]),
            textcoords="offset points",
            xytext=(6, 6),
            fontsize=8,
        )
    _baseline(ax, base_bpb)
    ax.set(
        xscale="log",
        xlabel="total cost per cell (USD)",
        ylabel="domain bpb (mean over seeds)",
        title="Cost efficiency: domain bpb vs total cost (star: best cell per source)",
    )
    ax.legend(fontsize=8)
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
                label=f"spend ${spend:,.0f}",
            )
        _baseline(ax, base_bpb)
        ax.set(xscale="log", title=source, xlabel="training tokens D", ylabel="general bpb")
        ax.legend(fontsize=7)
    fig.suptitle("Forgetting: general bits per byte vs training tokens")
    return fig


def _panels(n: int) -> tuple[Figure, Sequence[Axes]]:
    ncols = min(n, 3)
    nrows = math.ceil(n / ncols)
    fig = Figure(figsize=(_PANEL_W * ncols, _PANEL_H * nrows + 0.4), layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False, sharey=True).ravel()
    for ax in axes[n:]:
        ax.set_visible(False)
    return fig, axes[:n]


def _token_grid(tokens: pd.Series) -> np.ndarray:
    lo, hi = float(tokens.min()), float(tokens.max())
    return np.geomspace(lo / 1.25, hi * 1.25, 200)


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
