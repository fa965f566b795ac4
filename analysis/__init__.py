"""Pure numerics over the results table: law fitting, comparisons and reports.

No Ray, torch or other project packages are imported here: everything runs in a
notebook on a pandas table.

Public API
----------
fit_law(x, y, *, law="power_law_D", huber_delta=1e-3, ...) -> FitResult
LawFit(law="power_law_D", huber_delta=1e-3, ...).fit(x, y).predict(x)
analyze(results, out_dir, *, law="power_law_D", huber_delta=1e-3, tolerance_pct=1.0)
    -> AnalysisResult
laws: LAWS, Law, get_law, power_law_d, D_REF
"""

from __future__ import annotations

from analysis import laws
from analysis.compare import Decision
from analysis.errors import AnalysisError, NotFittedError
from analysis.fit import FLAG_DESCRIPTIONS, FitResult, LawFit, fit_law
from analysis.laws import LAWS, Law, get_law, power_law_d
from analysis.report import AnalysisResult, analyze
from analysis.sources import GroupFit, SourceFits
from analysis.table import REQUIRED_COLUMNS, load_results

__all__ = [
    "FLAG_DESCRIPTIONS",
    "LAWS",
    "REQUIRED_COLUMNS",
    "AnalysisError",
    "AnalysisResult",
    "Decision",
    "FitResult",
    "GroupFit",
    "Law",
    "NotFittedError",
    "LawFit",
    "SourceFits",
    "analyze",
    "fit_law",
    "get_law",
    "laws",
    "load_results",
    "power_law_d",
]
