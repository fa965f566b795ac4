"""Pure numerics over the results table: law fitting, uncertainty, comparisons, budgets, reports.

No Ray, torch or other project packages are imported here: everything runs in a
notebook on a pandas table.

Public API
----------
fit_law(x, y, *, law="power_law_D", huber_delta=1e-3, ...) -> FitResult
LawFit(law=..., n_boot=1000).fit(x, y).predict(x) / .predict_interval(x)
bootstrap_law(x, y, *, law=..., n_boot=1000, seed=0) -> Bootstrap
evaluate(results, *, target_tokens=None, target_spend=None, target_cost=None, law="auto",
         n_boot=1000, level=0.9, rule=DecisionRule(), folds=Folds(), ...) -> Analysis
write_report(analysis, out_dir) -> AnalysisResult; analyze(results, out_dir, **options) does both
validate_laws(table, laws, folds=Folds()) -> Validation  (rolling-origin selection, no bootstrap)
Target(train_tokens=..., curation_spend=..., total_cost=...)
laws: LAWS, Law, user_law, get_law, power_law_d, effective_tokens, D_REF
"""

from __future__ import annotations

from annealscale.analysis import laws
from annealscale.analysis.bootstrap import Bootstrap, bootstrap_law
from annealscale.analysis.budget import Allocation, CostModel, Frontier, Split
from annealscale.analysis.compare import Crossover, Decision, DecisionRule, TargetDecision
from annealscale.analysis.errors import AnalysisError, NotFittedError
from annealscale.analysis.fit import FLAG_DESCRIPTIONS, FitResult, LawFit, fit_law
from annealscale.analysis.laws import LAWS, Law, effective_tokens, get_law, power_law_d, user_law
from annealscale.analysis.report import Analysis, AnalysisResult, analyze, evaluate, write_report
from annealscale.analysis.sources import GroupFit, PoolModel, SourceFits
from annealscale.analysis.table import REQUIRED_COLUMNS, load_results
from annealscale.analysis.target import Target
from annealscale.analysis.validate import Folds, Validation, validate_laws

if (
    __name__ != "annealscale.analysis"
):  # the folder sits at the repository root: one module identity
    raise ImportError(
        f"import annealscale.analysis, not {__name__} (annealscale installs one namespace)"
    )

__all__ = [
    "FLAG_DESCRIPTIONS",
    "LAWS",
    "REQUIRED_COLUMNS",
    "Allocation",
    "Analysis",
    "AnalysisError",
    "AnalysisResult",
    "Bootstrap",
    "CostModel",
    "Crossover",
    "Decision",
    "DecisionRule",
    "FitResult",
    "Folds",
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
    "evaluate",
    "fit_law",
    "get_law",
    "laws",
    "load_results",
    "power_law_d",
    "user_law",
    "validate_laws",
    "write_report",
]
