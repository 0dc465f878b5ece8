"""The HTML report ``index.html`` of the explain stage (``reports/explain/`` by default).

It shows the metrics of every model and the explanation pictures.

:func:`build_report` is a pure builder: the explain stage has written the PNGs (see
:mod:`qsenn_core.explain`) and gathered the flat metrics JSONs; this module turns them into one
self-contained page (inline CSS, no scripts, images linked by relative paths) whose bytes depend
only on its inputs, so DVC caches it like any other output.

The metrics table follows the columns of the paper's Table 1 (accuracy, diversity@5 eq. 6,
dependence gamma eq. 8, alignment r eq. 10) plus the binary-feature fraction of Table 4 and the
features per class and total features of Table 5: the report columns of
:data:`qsenn_core.metric_columns.METRIC_COLUMNS`, keyed as the evaluate stage writes them. The
best value of each column with a direction is set in bold. Every metric of the JSONs is listed
under "All metrics".
"""

from __future__ import annotations

import html
import logging
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path, PurePosixPath
from urllib.parse import quote

from qsenn_core.errors import DataError
from qsenn_core.io import write_text
from qsenn_core.metric_columns import REPORT_COLUMNS

log = logging.getLogger(__name__)


#: Readable names of the pipeline's model keys (anything else is shown as given).
MODEL_LABELS: dict[str, str] = {
    "dense": "Dense",
    "glm5": "glm-saga₅",
    "final": "Q-SENN (final)",
}

_CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; margin: 0;
       color: #1f2328; background: #fff; line-height: 1.45; }
main { max-width: 1180px; margin: 0 auto; padding: 1.2rem 1.5rem 3rem; }
h1 { font-size: 1.6rem; margin: 0.4rem 0 0.2rem; }
h2 { font-size: 1.2rem; margin-top: 2.2rem; border-bottom: 1px solid #d0d7de;
     padding-bottom: .3rem; }
h3 { font-size: 1rem; margin: 1.2rem 0 .4rem; }
nav a { margin-right: 1rem; color: #0969da; text-decoration: none; font-size: .92rem; }
table { border-collapse: collapse; font-size: .9rem; margin: .6rem 0; }
th, td { border: 1px solid #d0d7de; padding: .3rem .65rem; }
th { background: #f6f8fa; text-align: center; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
td.name { font-weight: 600; white-space: nowrap; }
tr:nth-child(even) td { background: #fbfcfd; }
td.best { font-weight: 700; }
dl.info { display: grid; grid-template-columns: max-content auto; gap: .15rem 1rem;
          font-size: .9rem; margin: .6rem 0; }
dl.info dt { color: #57606a; } dl.info dd { margin: 0; }
figure { margin: .8rem 0 1.4rem; }
figure img { max-width: 100%; height: auto; border: 1px solid #eaeef2; }
figcaption { font-size: .85rem; color: #57606a; margin-top: .2rem; }
p.note { font-size: .88rem; color: #57606a; max-width: 60rem; }
details summary { cursor: pointer; color: #0969da; font-size: .92rem; }
footer { font-size: .8rem; color: #8c959f; margin-top: 3rem; }
"""

#: Explanations printed above each section of the page.
_NOTES: dict[str, str] = {
    "metrics": (
        "↑ higher is better, ↓ lower is better; the best value of a column is in bold. Accuracy, "
        "diversity@5, dependence and binary features as written by the evaluate stage (percent "
        "where the paper reports percent)."
    ),
    "assignment": "The final layer W: red = positive, blue = negative assignment, white = none.",
    "global": (
        "Each column shows one feature assigned to the class (+ / − weight): its feature map "
        "overlaid (colour map jet, gamma-corrected) on grayscale training images of the class."
    ),
    "local": (
        "Pixels where a feature exceeds a fraction (70 % in the paper) of its maximum on the test "
        "image, coloured by the strongest feature, and the contributions w·f of the features to "
        "the predicted class."
    ),
}


# ----------------------------------------------------------------------------------------------
# formatting helpers
# ----------------------------------------------------------------------------------------------


def _esc(value: object) -> str:
    return html.escape(str(value), quote=True)


def format_value(value: object, decimals: int | None = None) -> str:
    """A metric as table text: ``–`` for a missing or non-finite value, numbers with ``decimals``
    decimals (default: integers without, other numbers with two), lists joined by commas,
    anything else as text."""
    if value is None:
        return "–"
    if isinstance(value, (list, tuple)):
        return ", ".join(format_value(v, decimals) for v in value)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return str(value)
    if not math.isfinite(float(value)):
        return "–"
    if decimals is None:
        decimals = 0 if float(value).is_integer() and abs(value) < 1e15 else 2
    return f"{float(value):.{decimals}f}"


def column_decimals(values: Sequence[object]) -> int | None:
    """Decimals that show a column's numbers alike: 0 when all are integers, 1 when the largest
    is at least 10 (accuracy in percent: 85.1), else 2; ``None`` when there is no number."""
    numbers = [v for v in (_number(x) for x in values) if v is not None]
    if not numbers:
        return None
    if all(v.is_integer() for v in numbers):
        return 0
    return 1 if max(abs(v) for v in numbers) >= 10 else 2


def _number(value: object) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value) if math.isfinite(float(value)) else None


def model_label(name: str) -> str:
    """Readable row label of a model key: ``iter_3`` -> ``Q-SENN iteration 3``."""
    if name in MODEL_LABELS:
        return MODEL_LABELS[name]
    if name.startswith("iter_") and name[5:].isdigit():
        return f"Q-SENN iteration {int(name[5:])}"
    return name


def _link(rel: str, out_dir: Path, check: bool) -> str:
    """URL of a picture relative to the report, checked to exist when ``check``."""
    path = PurePosixPath(str(rel).replace(os.sep, "/"))
    if path.is_absolute() or not str(rel):
        raise DataError(f"report: image path {rel!r} must be relative to {out_dir}")
    if check and not (out_dir / Path(*path.parts)).is_file():
        raise DataError(f"report: image {out_dir / Path(*path.parts)} does not exist")
    return quote(str(path))


# ----------------------------------------------------------------------------------------------
# sections
# ----------------------------------------------------------------------------------------------


def metrics_table(metrics: Mapping[str, Mapping[str, object]]) -> str:
    """The Table-1 style table: one row per model (in the given order), the columns of
    :data:`~qsenn_core.metric_columns.REPORT_COLUMNS` that any model has, the best value of each
    directed column in bold."""
    columns = [c for c in REPORT_COLUMNS if any(c.key in row for row in metrics.values())]
    best: dict[str, float] = {}
    decimals: dict[str, int | None] = {}
    for col in columns:
        values = [_number(row[col.key]) for row in metrics.values() if col.key in row]
        numbers = [v for v in values if v is not None]
        decimals[col.key] = column_decimals(numbers)
        if col.better and len(numbers) > 1:
            best[col.key] = max(numbers) if col.better > 0 else min(numbers)
    head = "".join(
        f"<th>{_esc(c.label)}{' ' + c.arrow if c.arrow else ''}</th>" for c in columns
    )
    lines = ['<table class="metrics">', f"<tr><th>Model</th>{head}</tr>"]
    for name, row in metrics.items():
        cells = [f'<td class="name" title="{_esc(name)}">{_esc(model_label(name))}</td>']
        for col in columns:
            value = row.get(col.key)
            num = _number(value)
            is_best = num is not None and best.get(col.key) == num
            cls = "num best" if is_best else "num"
            text = format_value(value, decimals[col.key] if num is not None else None)
            cells.append(f'<td class="{cls}">{_esc(text)}</td>')
        lines.append("<tr>" + "".join(cells) + "</tr>")
    lines.append("</table>")
    return "\n".join(lines)


def all_metrics_table(metrics: Mapping[str, Mapping[str, object]]) -> str:
    """Every metric key of every model (keys sorted), one column per model."""
    keys = sorted({k for row in metrics.values() for k in row})
    head = "".join(f"<th>{_esc(model_label(n))}</th>" for n in metrics)
    lines = ['<table class="all-metrics">', f"<tr><th>metric</th>{head}</tr>"]
    for key in keys:
        places = column_decimals([row.get(key) for row in metrics.values()])
        cells = "".join(
            f'<td class="num">{_esc(format_value(row.get(key), places))}</td>'
            for row in metrics.values()
        )
        lines.append(f'<tr><td class="name">{_esc(key)}</td>{cells}</tr>')
    lines.append("</table>")
    return "\n".join(lines)


def generic_table(rows: Sequence[Mapping[str, object]]) -> str:
    """A table of dicts: columns are the keys in order of first appearance."""
    keys: list[str] = []
    for row in rows:
        keys.extend(k for k in row if k not in keys)
    lines = ["<table>", "<tr>" + "".join(f"<th>{_esc(k)}</th>" for k in keys) + "</tr>"]
    for row in rows:
        cells = []
        for key in keys:
            value = row.get(key)
            cls = ' class="num"' if _number(value) is not None else ""
            cells.append(f"<td{cls}>{_esc(format_value(value))}</td>")
        lines.append("<tr>" + "".join(cells) + "</tr>")
    lines.append("</table>")
    return "\n".join(lines)


def _note(text: str) -> str:
    return f'<p class="note">{_esc(text)}</p>\n'


def _figure(url: str, alt: str, caption: str) -> str:
    return (
        f'<figure><a href="{url}"><img src="{url}" alt="{_esc(alt)}" loading="lazy"></a>'
        f"<figcaption>{_esc(caption)}</figcaption></figure>"
    )


# ----------------------------------------------------------------------------------------------
# the page
# ----------------------------------------------------------------------------------------------


def build_report(
    out_dir: str | os.PathLike[str],
    *,
    metrics: Mapping[str, Mapping[str, object]],
    assignment_png: str | None,
    global_pngs: Sequence[tuple[str, str]],
    local_pngs: Sequence[tuple[str, str]],
    alignment_rows: Sequence[Mapping[str, object]] | None = None,
    title: str = "Q-SENN report",
    info: Mapping[str, object] | None = None,
    check_links: bool = True,
) -> Path:
    """Write ``out_dir/index.html`` atomically and return its path.

    Args:
        metrics: model name -> flat metrics (rows in this order: dense, glm5, iter_1.., final).
        assignment_png: picture of the final layer's assignment matrix, relative to ``out_dir``.
        global_pngs: ``(class name, relative path)`` of each global explanation.
        local_pngs: ``(caption, relative path)`` of each local explanation.
        alignment_rows: optional table rows (e.g. feature -> top CLIP concepts).
        info: optional run facts shown under the title (dataset, backbone, n_f*, ...).
        check_links: raise :class:`~qsenn_core.errors.DataError` when a linked picture is missing.
    """
    out = Path(out_dir)
    rows_ok = isinstance(metrics, Mapping) and all(isinstance(r, Mapping) for r in metrics.values())
    if not rows_ok:
        raise DataError("report: metrics must map each model name to a flat dict of metrics")
    sections: list[tuple[str, str, str]] = []  # (anchor, heading, body)
    if metrics:
        body = metrics_table(metrics) + (
            _note(_NOTES["metrics"])
            + "\n<details><summary>All metrics</summary>\n"
            + all_metrics_table(metrics)
            + "\n</details>"
        )
        sections.append(("metrics", "Metrics", body))
    if assignment_png:
        url = _link(assignment_png, out, check_links)
        sections.append(
            (
                "assignment",
                "Class-feature assignments",
                _note(_NOTES["assignment"])
                + _figure(url, "assignment matrix", "assignment matrix W"),
            )
        )
    if global_pngs:
        figs = [
            f"<h3>{_esc(name)}</h3>\n"
            + _figure(
                _link(rel, out, check_links),
                f"global explanation of {name}",
                f"features assigned to {name}, on training images of the class",
            )
            for name, rel in global_pngs
        ]
        sections.append(
            (
                "global",
                "Global explanations",
                _note(_NOTES["global"]) + "\n".join(figs),
            )
        )
    if local_pngs:
        figs = [
            _figure(_link(rel, out, check_links), f"local explanation: {cap}", cap)
            for cap, rel in local_pngs
        ]
        sections.append(
            (
                "local",
                "Local explanations",
                _note(_NOTES["local"]) + "\n".join(figs),
            )
        )
    if alignment_rows:
        sections.append(("alignment", "Feature alignment", generic_table(alignment_rows)))

    nav = " ".join(f'<a href="#{a}">{_esc(h)}</a>' for a, h, _ in sections)
    facts = ""
    if info:
        facts = (
            '<dl class="info">'
            + "".join(
                f"<dt>{_esc(k)}</dt><dd>{_esc(format_value(v))}</dd>" for k, v in info.items()
            )
            + "</dl>"
        )
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en">',
        "<head>",
        '<meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{_esc(title)}</title>",
        f"<style>{_CSS}</style>",
        "</head>",
        "<body><main>",
        f"<h1>{_esc(title)}</h1>",
        facts,
        f"<nav>{nav}</nav>",
    ]
    for anchor, heading, body in sections:
        parts.append(f'<section id="{anchor}">\n<h2>{_esc(heading)}</h2>\n{body}\n</section>')
    parts.append("<footer>Generated by the qsenn pipeline (Q-SENN, AAAI 2024).</footer>")
    parts.append("</main></body></html>")
    path = out / "index.html"
    write_text(path, "\n".join(p for p in parts if p) + "\n")
    log.info("wrote %s (%d sections)", path, len(sections))
    return path
