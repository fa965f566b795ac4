"""Proposals from a results table alone (``annealscale propose``), for teams that launch
their runs by other means.

Candidates are the table's grid completed: every source at each of its sampled curation
spends, at every training-token count in the table (plus any extra counts given), less
the cells already finished. Costs come from the table's ledger (`analysis.budget`): a
pool's measured curation cost is paid once (zero for pools already curated), training
costs ``k0 + k * tokens``.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence

import numpy as np
import pandas as pd

from annealscale.analysis.budget import cost_model
from annealscale.analysis.errors import AnalysisError
from annealscale.analysis.headline import format_probability
from annealscale.analysis.propose import Proposal, Proposer, ProposerSettings
from annealscale.analysis.propose_costs import CandidateCell, PoolReuseCosts
from annealscale.analysis.propose_model import DEFAULT_LAW_PRIOR
from annealscale.analysis.table import load_results
from annealscale.analysis.target import Target, format_tokens


def table_costs(finished: pd.DataFrame, table) -> PoolReuseCosts:
    """Cost model of a results table; raises when the table has no cost columns."""
    cm, why = cost_model(table)
    if cm is None:
        raise AnalysisError(f"propose needs costs: {why}")
    curation = {}
    if "curation_cost" in finished.columns:
        for (s, c), g in finished.groupby(["source", "curation_spend"]):
            curation[(str(s), float(c))] = float(g["curation_cost"].mean())
    return PoolReuseCosts(
        usd_per_train_token=cm.usd_per_train_token,
        train_fixed_usd=cm.train_fixed_usd,
        curation=curation,
        curation_ratio=dict(cm.curation_ratio),
    )


def table_candidates(
    finished: pd.DataFrame, extra_tokens: Sequence[float] = ()
) -> tuple[list[CandidateCell], list[CandidateCell]]:
    """``(open, done)``: the completed grid's unfinished cells, and the finished ones."""
    tokens = sorted(set(finished["train_tokens"].astype(float)) | {float(t) for t in extra_tokens})
    done_keys = set(
        zip(finished["source"], finished["curation_spend"], finished["train_tokens"], strict=True)
    )
    open_cells, done = [], []
    for (s, c), g in finished.groupby(["source", "curation_spend"], sort=True):
        u = float(g["unique_tokens"].mean()) if "unique_tokens" in g else None
        u = u if u is not None and math.isfinite(u) else None
        for d in tokens:
            cell = CandidateCell(
                source=str(s), curation_spend=float(c), train_tokens=d, unique_tokens=u
            )
            (done if (s, c, d) in done_keys else open_cells).append(cell)
    return open_cells, done


def grid_continuation(
    finished: pd.DataFrame, target_tokens: float | None = None, count: int = 2
) -> list[float]:
    """Training-token counts beyond the table's largest: the grid's own geometric step
    (x3 when it has a single count), ``count`` times, stopping at ``target_tokens``."""
    tokens = sorted(set(finished["train_tokens"].astype(float)))
    step = tokens[-1] / tokens[-2] if len(tokens) > 1 else 3.0
    out, d = [], tokens[-1]
    for _ in range(count):
        d *= step
        if target_tokens is not None and d > target_tokens:
            if target_tokens > tokens[-1] and (not out or out[-1] < target_tokens):
                out.append(float(target_tokens))
            break
        out.append(float(round(d)))
    return out


def propose_from_results(
    results: pd.DataFrame | str | os.PathLike[str],
    *,
    target: Target,
    n: int,
    extra_tokens: Sequence[float] = (),
    settings: ProposerSettings | None = None,
) -> Proposal:
    """The next ``n`` cells for the sweep in ``results``.

    Candidates are the table's grid completed (plus ``extra_tokens``); when every cell of
    it has finished, the grid continued toward the target (`grid_continuation`).

    ``settings`` default to those sweeps propose with: the law prior
    (`analysis.propose_model.DEFAULT_LAW_PRIOR`) on, since plain fits of a few cells per
    source are confidently wrong (on simulated problems after a two-cell seed, P(best)
    0.99 for a wrong source)."""
    if settings is None:
        settings = ProposerSettings(law_prior=DEFAULT_LAW_PRIOR)
    table = load_results(results)
    finished = table.finished
    open_cells, done = table_candidates(finished, extra_tokens)
    if not open_cells:  # a complete grid: continue it toward the target
        more = grid_continuation(finished, target.train_tokens)
        open_cells, done = table_candidates(finished, [*extra_tokens, *more])
    if not open_cells:
        raise AnalysisError(
            "every cell of the table's grid has finished and the target is within it; "
            "pass --tokens to propose other training budgets"
        )
    proposer = Proposer(target=target, costs=table_costs(finished, table), settings=settings)
    return proposer.propose(finished, open_cells, n=n, done=done)


def format_proposal(p: Proposal) -> str:
    """Plain-text table of the proposal, with the current decision first."""
    st = p.state
    lines = []
    if st.recommended is not None:
        probs = ", ".join(
            f"{s} {format_probability(v)}"
            for s, v in sorted(st.p_best.items(), key=lambda kv: -kv[1])
        )
        lines.append(
            f"Design belief at {st.target.label} (the proposer's posterior, used only to choose "
            f"cells; law {st.law}): design P(best) {probs}."
        )
    if st.unfitted:
        lines.append(f"Not enough cells to fit yet: {', '.join(st.unfitted)}.")
    lines.append(
        f"{'rank':>4}  {'source':<16}{'spend':>10}{'tokens':>10}{'exp. gain':>11}"
        f"{'P(wrong) -':>11}{'var -':>8}{'cost':>11}  why"
    )
    for c in p.cells:
        lines.append(
            f"{c.rank:>4}  {c.cell.source:<16}{c.cell.curation_spend:>10.4g}"
            f"{format_tokens(c.cell.train_tokens):>10}{_num(c.expected_gain):>11}"
            f"{_num(c.decision_gain):>11}{_pct(c.variance_gain):>8}{'$' + format(c.cost, ',.4g'):>11}"
            f"  {c.reason}"
        )
    return "\n".join(lines)


def _num(v: float) -> str:
    return "-" if not np.isfinite(v) else f"{v:.3g}"


def _pct(v: float) -> str:
    return "-" if not np.isfinite(v) else f"{v:.0%}"
