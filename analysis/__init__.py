"""Pure numerics over the results table: law fitting, uncertainty, comparisons, budgets, reports.

No Ray, torch or other project packages are imported here: everything runs in a
notebook on a pandas table.

Public API
----------
fit_law(x, y, *, law="power_law_D", huber_delta=1e-3, ...) -> FitResult
LawFit(law=..., n_boot=1000).fit(x, y).predict(x) / .predict_interval(x)
bootstrap_law(x, y, *, law=..., n_boot=1000, seed=0) -> Bootstrap
analyze(results, out_dir, *, target_tokens=None, target_spend=None, target_cost=None,
        law="auto", n_boot=1000, level=0.9, ...) -> AnalysisResult
Target(train_tokens=..., curation_spend=..., total_cost=...)
laws: LAWS, Law, user_law, get_law, power_law_d, effective_tokens, D_REF
"""

from __future__ import annotations

from analysis import laws
from analysis.bootstrap import Bootstrap, bootstrap_law
from analysis.budget import Allocation, CostModel, Frontier, Split
from analysis.compare import Crossover, Decision, Target, TargetDecision
from analysis.errors import AnalysisError, NotFittedError
from analysis.fit import FLAG_DESCRIPTIONS, FitResult, LawFit, fit_law
from analysis.laws import LAWS, Law, effective_tokens, get_law, power_law_d, user_law
from analysis.report import AnalysisResult, analyze
from analysis.sources import GroupFit, PoolModel, SourceFits
from analysis.table import REQUIRED_COLUMNS, load_results
from analysis.validate import Validation

__all__ = [
    "FLAG_DESCRIPTIONS",
    "LAWS",
    "REQUIRED_COLUMNS",
    "Allocation",
    "AnalysisError",
    "AnalysisResult",
    "Bootstrap",
    "CostModel",
    "Crossover",
    "Decision",
    "FitResult",
    "Frontier",
    "GroupFit",
    "Law",
    "LawFit",
    "NotFittedError",
    "PoolModel",
    "SourceFits",
    "Split",
    "Target",
    "TargetDecision",
    "Validation",
    "analyze",
    "bootstrap_law",
    "effective_tokens",
    "fit_law",
    "get_law",
    "laws",
    "load_results",
    "power_law_d",
    "user_law",
]
