"""`analyze`: fit every source, decide, and write fits.json, PNG plots and report.html."""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any

import numpy as np
import pandas as pd

from analysis import plots as plotting
from analysis.compare import Decision, decide
from analysis.laws import Law, get_law
from analysis.render import render_report
from analysis.sources import POOLED_NOTE, SourceFits, fit_sources
from analysis.table import ResultsTable, cell_means, load_results

SCHEMA_VERSION = 1
METRIC = "domain_bpb"
PLOT_CAPTIONS: Mapping[str, str] = MappingProxyType(
    {
        "domain_vs_tokens": "Domain bpb vs training tokens, per source; lines are fitted laws "
        "(per spend, and dashed over all spends).",
        "cost_efficiency": "Domain bpb vs total cost of each cell (seeds averaged); star marks "
        "the best cell of each source.",
        "forgetting": "General bpb vs training tokens (forgetting), per source.",
    }
)


@dataclass(frozen=True, kw_only=True)
class AnalysisResult:
    """What `analyze` wrote and found."""

    fits_json: Path
    report_html: Path
    plots: Mapping[str, Path]
    """PNG path per plot name: ``domain_vs_tokens``, ``cost_efficiency``, ``forgetting``."""
    fits: Mapping[str, SourceFits]
    """Per-source fits (all spends pooled, and per spend), by source name."""
    decision: Decision


def analyze(
    results: pd.DataFrame | str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    *,
    law: str | Law = "power_law_D",
    huber_delta: float = 1e-3,
    tolerance_pct: float = 1.0,
) -> AnalysisResult:
    """Fit ``law`` to domain bpb per source and per spend and write the report.

    Parameters
    ----------
    results : DataFrame or path
        The results table (one row per cell and seed) or a Parquet file holding it.
        Only rows with status "finished" and a finite domain bpb are fitted.
    out_dir : path
        Created if needed; receives ``fits.json``, ``report.html`` and ``plots/*.png``.
    law : str or Law
        A one-variable law in training tokens; ``"power_law_D"`` by default.
    huber_delta : float
        Huber threshold on log residuals (see `analysis.fit.fit_law`).
    tolerance_pct : float
        The cheapest cell reported is the cheapest within this percentage of the
        best observed domain bpb.

    Raises
    ------
    AnalysisError
        On an empty table, missing columns or no finished cells.
    """
    law = get_law(law)
    table = load_results(results)
    out = Path(out_dir)
    (out / "plots").mkdir(parents=True, exist_ok=True)

    fits = fit_sources(table.finished, law=law, metric=METRIC, huber_delta=huber_delta)
    cells = cell_means(table.finished)
    decision = decide(fits, cells, tolerance_pct=tolerance_pct)

    base_domain = table.baselines["base_domain_bpb"]
    figures = {
        "domain_vs_tokens": plotting.domain_vs_tokens(table.finished, fits, base_domain),
        "cost_efficiency": plotting.cost_efficiency(cells, base_domain),
        "forgetting": plotting.forgetting(
            table.finished, cells, table.baselines["base_general_bpb"]
        ),
    }
    plot_paths = {
        name: plotting.save_png(fig, out / "plots" / f"{name}.png") for name, fig in figures.items()
    }

    fits_json = out / "fits.json"
    payload = fits_payload(table, fits, decision, law=law, huber_delta=huber_delta)
    fits_json.write_text(dumps_json(payload) + "\n", encoding="utf-8")

    report_html = out / "report.html"
    html = render_report(
        table=table,
        fits=fits,
        decision=decision,
        plots=[(PLOT_CAPTIONS[name], path) for name, path in plot_paths.items()],
        law_formula=law.formula,
    )
    report_html.write_text(html, encoding="utf-8")

    return AnalysisResult(
        fits_json=fits_json,
        report_html=report_html,
        plots=MappingProxyType(plot_paths),
        fits=MappingProxyType(fits),
        decision=decision,
    )


def fits_payload(
    table: ResultsTable,
    fits: Mapping[str, SourceFits],
    decision: Decision,
    *,
    law: Law,
    huber_delta: float,
) -> dict[str, Any]:
    """The content of fits.json: law, settings, input counts, per-source fits, decision."""
    at = {law.variables[0]: decision.largest_train_tokens}
    sources = {}
    for name, sf in fits.items():
        pooled = sf.pooled.to_dict(at)
        sources[name] = {
            "law": law.name,
            "formula": law.formula,
            "pooled_over_spends": True,
            "note": POOLED_NOTE,
            **pooled,
            "per_spend": [
                {"curation_spend": g.curation_spend, **g.to_dict(at)} for g in sf.per_spend
            ],
        }
    return {
        "schema_version": SCHEMA_VERSION,
        "metric": METRIC,
        "law": {
            "name": law.name,
            "formula": law.formula,
            "params": list(law.param_names),
            "variables": dict(zip(law.variables, law.columns, strict=True)),
            "references": list(law.references),
        },
        "fit_settings": {
            "objective": "Huber loss on log(metric), parameters fitted in log space",
            "huber_delta": None if math.isinf(huber_delta) else huber_delta,
        },
        "input": {
            "path": table.source_path,
            "n_rows": len(table.rows),
            "n_finished": len(table.finished),
            "n_excluded": table.n_excluded,
        },
        "baselines": dict(table.baselines),
        "sources": sources,
        "decision": decision.to_dict(),
    }


def dumps_json(obj: Any) -> str:
    """JSON text with non-finite floats written as null (never NaN/Infinity literals)."""
    return json.dumps(_jsonable(obj), indent=2, allow_nan=False)


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, Mapping):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple | np.ndarray):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, bool | np.bool_):
        return bool(obj)
    if isinstance(obj, int | np.integer):
        return int(obj)
    if isinstance(obj, float | np.floating):
        return float(obj) if math.isfinite(obj) else None
    if obj is None or isinstance(obj, str):
        return obj
    if isinstance(obj, os.PathLike):
        return os.fspath(obj)
    raise TypeError(f"cannot write {type(obj).__name__} to JSON")
