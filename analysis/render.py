"""Render the self-contained HTML report: inline CSS, PNGs as base64 data URIs, no scripts."""

from __future__ import annotations

import base64
import math
from collections.abc import Iterable, Mapping, Sequence
from html import escape
from pathlib import Path

import pandas as pd

from analysis.compare import Decision, format_tokens
from analysis.fit import FLAG_DESCRIPTIONS
from analysis.sources import GroupFit, SourceFits
from analysis.table import ResultsTable

_CSS = """
body { font-family: -apple-system, "Segoe UI", Helvetica, Arial, sans-serif; margin: 2em auto;
       max-width: 1100px; color: #222; line-height: 1.45; padding: 0 1em; }
h1 { font-size: 1.6em; } h2 { font-size: 1.25em; margin-top: 2em; border-bottom: 1px solid #ddd; }
.headline { background: #f3f7fb; border-left: 4px solid #2a6fb0; padding: 0.6em 1em; }
.headline p { margin: 0.4em 0; }
.flip { color: #a3461b; font-weight: 600; }
table { border-collapse: collapse; font-size: 0.85em; margin: 0.5em 0; }
th, td { border: 1px solid #ddd; padding: 3px 8px; text-align: right; }
th { background: #f4f4f4; } td.text { text-align: left; }
tr.failed td { color: #999; } tr.pooled td { font-weight: 600; }
img { max-width: 100%; border: 1px solid #eee; margin: 0.5em 0; }
.note { color: #666; font-size: 0.85em; }
"""


def render_report(
    *,
    table: ResultsTable,
    fits: Mapping[str, SourceFits],
    decision: Decision,
    plots: Sequence[tuple[str, Path]],
    law_formula: str,
) -> str:
    """The report as one HTML string; ``plots`` are ``(caption, png path)`` pairs."""
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        "<title>annealscale report</title>",
        f"<style>{_CSS}</style></head><body>",
        "<h1>annealscale: which source to buy, at what budget</h1>",
        _headline(decision),
        "<h2>Rankings by predicted domain bpb</h2>",
        _rankings(decision),
        "<h2>Plots</h2>",
        *(_figure(caption, path) for caption, path in plots),
        "<h2>Fits</h2>",
        f"<p>Law: <code>{escape(law_formula)}</code>. Huber loss on log domain bpb. Rows in bold "
        "pool every curation spend of the source; the law has no spend term.</p>",
        _fits_table(fits, decision.largest_train_tokens),
        _flag_legend(),
        "<h2>Cells</h2>",
        f"<p>{len(table.rows)} row(s); {len(table.finished)} finished and fitted, "
        f"{table.n_excluded} excluded (failed or without a finite domain bpb; greyed).</p>",
        _cells_table(table.rows),
        "</body></html>",
    ]
    return "\n".join(parts)


def _headline(decision: Decision) -> str:
    items = []
    for msg in decision.messages:
        cls = ' class="flip"' if msg.startswith("Micro-annealing would pick") else ""
        items.append(f"<p{cls}>{escape(msg)}</p>")
    return f'<div class="headline">{"".join(items)}</div>'


def _rankings(decision: Decision) -> str:
    rows = []
    n = max(len(decision.ranking_at_smallest), len(decision.ranking_at_largest))
    for i in range(n):
        small = decision.ranking_at_smallest[i] if i < len(decision.ranking_at_smallest) else None
        large = decision.ranking_at_largest[i] if i < len(decision.ranking_at_largest) else None
        rows.append(
            [
                _right(str(i + 1)),
                *_pair(small),
                *_pair(large),
            ]
        )
    head = [
        "rank",
        f"source at {format_tokens(decision.smallest_train_tokens)} tokens",
        "predicted bpb",
        f"source at {format_tokens(decision.largest_train_tokens)} tokens",
        "predicted bpb",
    ]
    return _table(head, rows)


def _figure(caption: str, path: Path) -> str:
    data = base64.b64encode(path.read_bytes()).decode("ascii")
    return (
        f'<figure><img alt="{escape(caption)}" src="data:image/png;base64,{data}">'
        f'<figcaption class="note">{escape(caption)} ({escape(path.name)})</figcaption></figure>'
    )


def _fits_table(fits: Mapping[str, SourceFits], d_max: float) -> str:
    params: list[str] = []
    for sf in fits.values():
        for g in (sf.pooled, *sf.per_spend):
            if g.result is not None:
                params += [p for p in g.result.law.param_names if p not in params]
    head = [
        "source",
        "curation spend",
        "n",
        *params,
        "RMSE",
        "R²",
        f"bpb at {format_tokens(d_max)}",
        "flags",
    ]
    rows, classes = [], []
    for source, sf in fits.items():
        for g in (sf.pooled, *sf.per_spend):
            rows.append(_fit_row(source, g, params, d_max))
            classes.append("pooled" if g.curation_spend is None else "")
    return _table(head, rows, classes)


def _fit_row(source: str, g: GroupFit, params: list[str], d_max: float) -> list[str]:
    spend = "all" if g.curation_spend is None else f"${g.curation_spend:,.2f}"
    res = g.result
    if res is None:
        blanks = [_right("")] * (len(params) + 3)
        return [_text(source), _text(spend), _right(str(g.n_points)), *blanks, _text(g.error or "")]
    return [
        _text(source),
        _text(spend),
        _right(str(res.n_points)),
        *(_num(res.params.get(p, math.nan), 4) for p in params),
        _num(res.rmse, 4),
        _num(res.r2, 4),
        _num(float(res.predict([d_max])[0]), 4),
        _text(", ".join(res.flags) or "none"),
    ]


def _flag_legend() -> str:
    items = "".join(
        f"<li><code>{escape(k)}</code>: {escape(v)}</li>" for k, v in FLAG_DESCRIPTIONS.items()
    )
    return f'<ul class="note">{items}</ul>'


def _cells_table(rows: pd.DataFrame) -> str:
    cols = [
        "source",
        "curation_spend",
        "unique_tokens",
        "train_tokens",
        "seed",
        "status",
        "domain_bpb",
        "general_bpb",
        "total_cost",
    ]
    ordered = rows.sort_values(["source", "curation_spend", "train_tokens", "seed"], kind="stable")
    body, classes = [], []
    for _, r in ordered.iterrows():
        body.append(
            [
                _text(r["source"]),
                _right(f"${r['curation_spend']:,.2f}"),
                _right(format_tokens(r["unique_tokens"])),
                _right(format_tokens(r["train_tokens"])),
                _num(r["seed"], 0),
                _text(r["status"]),
                _num(r["domain_bpb"], 4),
                _num(r["general_bpb"], 4),
                _right(f"${r['total_cost']:,.2f}" if math.isfinite(r["total_cost"]) else ""),
            ]
        )
        finished = r["status"] == "finished" and math.isfinite(r["domain_bpb"])
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


def _pair(entry: tuple[str, float] | None) -> list[str]:
    if entry is None:
        return [_right(""), _right("")]
    return [_text(entry[0]), _num(entry[1], 4)]


def _right(value: str) -> str:
    return f"<td>{escape(value)}</td>"


def _text(value: object) -> str:
    return f'<td class="text">{escape(str(value))}</td>'


def _num(value: float | None, digits: int) -> str:
    if value is None or not math.isfinite(float(value)):
        return "<td></td>"
    return f"<td>{float(value):.{digits}f}</td>"
