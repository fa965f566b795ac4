"""Render the self-contained HTML report: inline CSS, PNGs as base64 data URIs, no scripts.

The report leads with the recommendation and its probability, then the decision at
each target (predictions with intervals, probabilities, crossovers, the
micro-annealing check, the budget split), the plots, the held-out validation, the
fits with their diagnostics, what was skipped, and every cell.
"""

from __future__ import annotations

import base64
import math
from collections.abc import Iterable, Mapping, Sequence
from html import escape
from pathlib import Path

import pandas as pd

from annealscale.analysis.budget import CostModel
from annealscale.analysis.compare import Decision, SourcePrediction, TargetDecision
from annealscale.analysis.fit import FLAG_DESCRIPTIONS
from annealscale.analysis.headline import factor, format_probability
from annealscale.analysis.objective import BPB
from annealscale.analysis.sources import GroupFit, SourceFits
from annealscale.analysis.table import ResultsTable
from annealscale.analysis.target import format_tokens
from annealscale.analysis.two_step import TwoStep
from annealscale.analysis.validate import Validation

_CSS = """
body { font-family: -apple-system, "Segoe UI", Helvetica, Arial, sans-serif; margin: 2em auto;
       max-width: 1150px; color: #222; line-height: 1.45; padding: 0 1em; }
h1 { font-size: 1.6em; } h2 { font-size: 1.25em; margin-top: 2em; border-bottom: 1px solid #ddd; }
h3 { font-size: 1.05em; margin-top: 1.4em; }
.headline { background: #f3f7fb; border-left: 4px solid #2a6fb0; padding: 0.6em 1em; }
.headline p { margin: 0.4em 0; } .headline p.rec { font-size: 1.15em; font-weight: 600; }
.flip { color: #a3461b; font-weight: 600; }
table { border-collapse: collapse; font-size: 0.85em; margin: 0.5em 0; }
th, td { border: 1px solid #ddd; padding: 3px 8px; text-align: right; }
th { background: #f4f4f4; } td.text { text-align: left; }
tr.failed td { color: #999; } tr.pooled td { font-weight: 600; } tr.best td { background: #eef7ee; }
img { max-width: 100%; border: 1px solid #eee; margin: 0.5em 0; }
.note { color: #666; font-size: 0.85em; }
"""


def render_report(
    *,
    table: ResultsTable,
    fits: Mapping[str, SourceFits],
    decision: Decision,
    validation: Validation,
    costs: CostModel | None,
    notes: Sequence[str],
    plots: Sequence[tuple[str, Path]],
    level: float,
    n_boot: int,
    two_step: TwoStep | None = None,
) -> str:
    """The report as one HTML string; ``plots`` are ``(caption, png path)`` pairs;
    ``two_step`` adds the link of a task score."""
    law = validation.selected
    obj = decision.primary.objective
    fitted = obj.label if two_step is None else two_step.task.loss_objective.label
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        "<title>annealscale report</title>",
        f"<style>{_CSS}</style></head><body>",
        "<h1>annealscale: which source to buy, at what budget</h1>",
        _headline(decision),
        f'<p class="note">Law <code>{escape(law.name)}</code>: {escape(validation.reason)}. '
        f"Intervals are {level:.0%} intervals of the expected {escape(obj.label)}: {n_boot} "
        "bootstrap "
        "resamples of the cells, re-centred on the fit and widened by the extrapolation error "
        f"({validation.error_rate:.2%} of {'bpb' if obj == BPB else escape(fitted)} per e-fold "
        "of reach, "
        + (
            "measured on held-out budgets and shrunk toward a 1% prior"
            if validation.checked
            else "the prior: nothing could be held out to measure it"
        )
        + ") and by the candidate laws' disagreement"
        + ("" if two_step is None else _two_step_sentence(two_step))
        + "; P(best) is the share of draws in which a source is best.</p>",
        *(_target_section(td, costs) for td in decision.targets),
        "<h2>Plots</h2>",
        *(_figure(caption, path) for caption, path in plots),
        "<h2>Held-out validation</h2>",
        _validation(validation),
        "<h2>Fits</h2>",
        f"<p>Law: <code>{escape(law.formula)}</code>. Huber loss on log {escape(fitted)}, "
        "parameters "
        "in log space. Bold rows: the chosen law over every spend of the source, with "
        f"{level:.0%} bootstrap intervals; other rows: <code>power_law_D</code> per spend.</p>",
        _fits_table(fits, level),
        _flag_legend(),
    ]
    if notes:
        items = "".join(f"<li>{escape(n)}</li>" for n in notes)
        parts += ["<h2>Notes</h2>", f'<ul class="note">{items}</ul>']
    if costs is not None:
        parts.append(
            f'<p class="note">Cost model: {escape(costs.basis)}; '
            f"${costs.usd_per_train_token:.4g} per training token, "
            f"${costs.train_fixed_usd:,.4g} fixed per anneal.</p>"
        )
    parts += [
        "<h2>Cells</h2>",
        f"<p>{len(table.rows)} row(s); {len(table.finished)} finished and fitted, "
        f"{table.n_excluded} excluded (failed or without a finite {escape(fitted)}; greyed).</p>",
        _cells_table(table.rows, table.metric),
        "</body></html>",
    ]
    return "\n".join(parts)


def _headline(decision: Decision) -> str:
    items = []
    for i, msg in enumerate(decision.messages):
        cls = ""
        if i == 0:
            cls = ' class="rec"'
        elif msg.startswith(("Micro-annealing would pick", "Crossover")):
            cls = ' class="flip"'
        items.append(f"<p{cls}>{escape(msg)}</p>")
    return f'<div class="headline">{"".join(items)}</div>'


def _target_section(td: TargetDecision, costs: CostModel | None) -> str:
    parts = [
        f"<h2>Decision at {escape(td.target.label)}</h2>",
        f"<p><b>{escape(_OUTCOME_TEXT[td.outcome])}</b> Rule: "
        f"{escape(td.rule.describe(td.objective.unit))}. "
        f"Rows are ranked by predicted {_short(td)}"
        + (
            ""
            if td.objective == BPB
            else f" ({'higher' if td.objective.higher_is_better else 'lower'} is better)"
        )
        + "; the first is the leader.</p>",
    ]
    head = [
        "rank",
        "source",
        "curation spend",
        "training tokens",
        *(["total cost"] if costs is not None else []),
        f"predicted {_short(td)}",
        f"{td.level:.0%} interval",
        "P(best)",
        "extrapolation",
    ]
    rows, classes = [], []
    for i, s in enumerate(td.ranking):
        p = td.predictions[s]
        rows.append(
            [
                _right(str(i + 1)),
                _text(s),
                _right(f"${p.curation_spend:,.4g}" if p.spend_modelled else "pooled"),
                _right(format_tokens(p.train_tokens)),
                *(
                    [_right(f"${p.total_cost:,.4g}")]
                    if costs is not None and p.total_cost is not None
                    else []
                ),
                _num(p.predicted, 4),
                _right(f"{p.lower:.4f} - {p.upper:.4f}"),
                _right(format_probability(td.p_best.get(s, 0.0))),
                _text(_reach(p)),
            ]
        )
        classes.append("best" if s == td.recommended else "")
    parts.append(_table(head, rows, classes))
    for s, why in td.unranked.items():
        parts.append(f'<p class="note">{escape(s)}: not ranked ({escape(why)}).</p>')
    if td.crossovers:
        items = "".join(f"<li>{escape(c.describe())}</li>" for c in td.crossovers)
        parts.append(f"<h3>Crossovers</h3><ul>{items}</ul>")
    else:
        parts.append("<h3>Crossovers</h3><p>None found in the searched range.</p>")
    m = td.micro_annealing
    if m is not None and m.cells:
        mrows = []
        for s in m.ranking:
            c = m.cells[s]
            mrows.append(
                [
                    _text(s),
                    _right(f"${c['curation_spend']:,.4g}"),
                    _right(format_tokens(c["train_tokens"])),
                    _num(c[td.objective.column], 4),
                ]
            )
        if not m.ranking_differs:
            verdict = "<p>The micro-annealing ranking holds at the target.</p>"
        elif td.buy:
            verdict = '<p class="flip">The micro-annealing ranking is wrong at the target.</p>'
        else:
            verdict = (
                '<p class="flip">The micro-annealing ranking differs from the predicted '
                "ranking at the target, which is not yet decided.</p>"
            )
        parts += [
            "<h3>Micro-annealing check (cheapest sampled cell per source, observed)</h3>",
            _table(
                ["source", "curation spend", "training tokens", f"observed {_short(td)}"],
                mrows,
            ),
            verdict,
        ]
    if td.allocation is not None:
        arows = []
        for s, sp in sorted(td.allocation.splits.items(), key=lambda kv: kv[1].predicted):
            arows.append(
                [
                    _text(s),
                    _right(f"${sp.curation_spend:,.4g}"),
                    _right(format_tokens(sp.train_tokens)),
                    _right(f"{sp.curation_cost / sp.total_cost:.0%}"),
                    _num(sp.predicted, 4),
                    _text("yes" if sp.extrapolated else "no"),
                ]
            )
        parts += [
            f"<h3>Budget split of ${td.allocation.total_cost:,.4g}</h3>",
            _table(
                [
                    "source",
                    "curation spend",
                    "training tokens",
                    "on curation",
                    "predicted bpb",
                    "extrapolated",
                ],
                arows,
                [
                    "best" if s == td.allocation.chosen else ""
                    for s, _ in sorted(td.allocation.splits.items(), key=lambda kv: kv[1].predicted)
                ],
            ),
            f'<p class="note">{escape(td.allocation.note)}.</p>',
        ]
    parts.append(_next_cells(td))
    for n in td.notes:
        parts.append(f'<p class="note">{escape(n)}.</p>')
    return "\n".join(parts)


_OUTCOME_TEXT = {
    "buy": "Decided: the leader meets the rule.",
    "not_separated": "Not separated yet: the leader does not meet the rule.",
    "unchecked": "No decision: the grid is too small to check its own law.",
    "single": "One source could be ranked.",
    "none": "No source could be ranked.",
}


def _reach(p: SourcePrediction) -> str:
    far = {v: f for v, f in p.reach.items() if f > 1.0 + 1e-9}
    if not far:
        return "inside the sampled budgets"
    names = {"train_tokens": "tokens", "curation_spend": "spend"}
    return ", ".join(f"{factor(f)} beyond in {names.get(v, v)}" for v, f in far.items())


def _next_cells(td: TargetDecision) -> str:
    """The proposer's top cells: what to run next to make this decision surer."""
    head = "<h3>What to run next</h3>"
    if not td.next_cells:
        return (
            f'{head}<p class="note">No proposal (the proposer needs cost columns; see the '
            "notes).</p>"
        )
    rows = [
        [
            _right(str(c["rank"])),
            _text(c["source"]),
            _right(f"${c['curation_spend']:,.4g}"),
            _right(format_tokens(c["train_tokens"])),
            _num(c["decision_gain"], 3),
            _right(f"{c['variance_gain']:.0%}" if math.isfinite(c["variance_gain"]) else ""),
            _right(f"${c['cost']:,.4g}"),
            _text(c["reason"]),
        ]
        for c in td.next_cells
    ]
    return "\n".join(
        [
            head,
            "<p>Cells chosen jointly by <code>annealscale propose</code> for this target: "
            "expected reduction of the probability of a wrong decision, expected reduction of "
            "the target variance, and marginal cost.</p>",
            _table(
                [
                    "rank",
                    "source",
                    "curation spend",
                    "training tokens",
                    "P(wrong) -",
                    "variance -",
                    "cost",
                    "why",
                ],
                rows,
            ),
        ]
    )


def _validation(validation: Validation) -> str:
    head = [
        "law",
        "parameters",
        "sources checked",
        "rms error (like for like)",
        "mean |error|",
        "weight",
        "inside interval",
        "chosen",
    ]
    rows = []
    for v in validation.laws:
        rows.append(
            [
                _text(v.law.name),
                _right(str(v.law.n_params)),
                _right(str(len(v.sources))),
                _right(f"{math.sqrt(v.score):.2%}" if math.isfinite(v.score) else ""),
                _right(f"{v.mean_abs_error:.2%}" if v.cells else ""),
                _right(f"{validation.weights.get(v.law.name, 0.0):.2f}"),
                _right(f"{sum(c.inside for c in v.cells)}/{len(v.cells)}" if v.cells else ""),
                _text("yes" if v.law.name == validation.selected.name else ""),
            ]
        )
    parts = [
        f"<p>Held out: {escape(validation.held_out)}. The law with the lowest error on the "
        "predictions every candidate made is chosen; the weights (inverse squared error) set "
        "how much each law's disagreement widens the intervals. A held-out cell's interval "
        f"is the {validation.level:.0%} interval for an observation from the extrapolation "
        "error rate estimated without that cell's source and variable.</p>",
        _table(head, rows),
    ]
    chosen = validation.of(validation.selected)
    if chosen is not None and chosen.cells:
        crow = [
            [
                _text(c.source),
                _text(f"{c.variable} > {c.origin:,.4g} ({c.reach:,.1f}x)"),
                _right(f"${c.curation_spend:,.4g}"),
                _right(format_tokens(c.train_tokens)),
                _num(c.observed, 4),
                _num(c.predicted, 4),
                _right(f"{c.obs_lower:.4f} - {c.obs_upper:.4f}"),
                _right(f"{c.error:+.2%}"),
                _text("yes" if c.inside else "no"),
            ]
            for c in chosen.cells
        ]
        parts.append(
            _table(
                [
                    "source",
                    "fold (reach)",
                    "spend",
                    "tokens",
                    "observed",
                    "predicted",
                    "interval",
                    "error",
                    "inside",
                ],
                crow,
            )
        )
    skipped = {s: why for v in validation.laws for s, why in v.skipped.items()}
    for s, why in skipped.items():
        parts.append(f'<p class="note">{escape(s)}: not validated ({escape(why)}).</p>')
    return "\n".join(parts)


def _figure(caption: str, path: Path) -> str:
    data = base64.b64encode(path.read_bytes()).decode("ascii")
    return (
        f'<figure><img alt="{escape(caption)}" src="data:image/png;base64,{data}">'
        f'<figcaption class="note">{escape(caption)} ({escape(path.name)})</figcaption></figure>'
    )


def _fits_table(fits: Mapping[str, SourceFits], level: float) -> str:
    params: list[str] = []
    for sf in fits.values():
        for g in (sf.pooled, *sf.per_spend):
            if g.result is not None:
                params += [p for p in g.result.law.param_names if p not in params]
    head = ["source", "law", "curation spend", "n", *params, "RMSE", "R²", "flags"]
    rows, classes = [], []
    for source, sf in fits.items():
        for g in (sf.pooled, *sf.per_spend):
            rows.append(_fit_row(source, g, params, level))
            classes.append("pooled" if g.curation_spend is None else "")
    return _table(head, rows, classes)


def _fit_row(source: str, g: GroupFit, params: list[str], level: float) -> list[str]:
    spend = "all" if g.curation_spend is None else f"${g.curation_spend:,.4g}"
    res = g.result
    if res is None:
        blanks = [_right("")] * (len(params) + 2)
        return [
            _text(source),
            _text(""),
            _text(spend),
            _right(str(g.n_points)),
            *blanks,
            _text(g.error or ""),
        ]
    intervals = g.bootstrap.param_intervals(level) if g.bootstrap is not None else {}
    cells = []
    for p in params:
        v = res.params.get(p)
        if v is None:
            cells.append("<td></td>")
        elif p in intervals:
            lo, hi = intervals[p]
            cells.append(f"<td>{v:.4g}<br><span class=note>[{lo:.3g}, {hi:.3g}]</span></td>")
        else:
            cells.append(f"<td>{v:.4g}</td>")
    return [
        _text(source),
        _text(res.law.name),
        _text(spend),
        _right(str(res.n_points)),
        *cells,
        _num(res.rmse, 4),
        _num(res.r2, 4),
        _text(", ".join(res.flags) or "none"),
    ]


def _flag_legend() -> str:
    items = "".join(
        f"<li><code>{escape(k)}</code>: {escape(v)}</li>" for k, v in FLAG_DESCRIPTIONS.items()
    )
    return f'<ul class="note">{items}</ul>'


def _cells_table(rows: pd.DataFrame, metric: str = "domain_bpb") -> str:
    tasks = sorted(c for c in rows.columns if str(c).startswith("task/"))
    cols = [
        c
        for c in (
            "source",
            "curation_spend",
            "unique_tokens",
            "train_tokens",
            "seed",
            "status",
            "domain_bpb",
            "general_bpb",
            *tasks,
            "total_cost",
        )
        if c in rows.columns
    ]
    ordered = rows.sort_values(["source", "curation_spend", "train_tokens", "seed"], kind="stable")
    body, classes = [], []
    for _, r in ordered.iterrows():
        line = []
        for c in cols:
            v = r[c]
            if c in ("source", "status"):
                line.append(_text(v))
            elif c in ("curation_spend", "total_cost"):
                line.append(_right(f"${v:,.4g}" if math.isfinite(v) else ""))
            elif c in ("unique_tokens", "train_tokens"):
                line.append(_right(format_tokens(v)))
            elif c == "seed":
                line.append(_num(v, 0))
            else:
                line.append(_num(v, 4))
        body.append(line)
        finished = r["status"] == "finished" and math.isfinite(r[metric])
        classes.append("" if finished else "failed")
    return _table(cols, body, classes)


def _table(head: Iterable[str], rows: Iterable[list[str]], classes: Sequence[str] = ()) -> str:
    th = "".join(f"<th>{escape(h)}</th>" for h in head)
    trs = []
    for i, row in enumerate(rows):
        cls = classes[i] if i < len(classes) and classes[i] else ""
        attr = f' class="{cls}"' if cls else ""
        trs.append(f"<tr{attr}>{''.join(row)}</tr>")
    return f"<table><thead><tr>{th}</tr></thead><tbody>{''.join(trs)}</tbody></table>"


def _right(value: str) -> str:
    return f"<td>{escape(value)}</td>"


def _text(value: object) -> str:
    return f'<td class="text">{escape(str(value))}</td>'


def _num(value: float | None, digits: int) -> str:
    if value is None or not math.isfinite(float(value)):
        return "<td></td>"
    return f"<td>{float(value):.{digits}f}</td>"


def _two_step_sentence(steps: TwoStep) -> str:
    """How the score's intervals are built, for the report's note."""
    link = steps.link
    floor = "given (chance)" if link.floor_fixed else "fitted"
    return (
        f"; then, step 2, each draw of the {steps.task.task} bpb goes through a draw of the "
        f"task's sigmoid link to {steps.task.metric} (one link shared by every source, "
        f"floor {floor} {link.floor:.3f}, ceiling {link.ceiling:.3f}, fitted to "
        f"{link.n_cells} cells with binomial weights and bootstrapped over cells"
        + (f", plus {link.extra_sd:.3f} of scatter about the link" if link.extra_sd > 0 else "")
        + ")"
    )


def _short(td: TargetDecision) -> str:
    """The metric's name in table headings: "bpb" for the default, else its label."""
    return "bpb" if td.objective == BPB else escape(td.objective.label)
