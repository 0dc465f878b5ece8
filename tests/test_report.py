"""Tests of qsenn_core.report: every metrics row and picture is in index.html, links resolve,
bad inputs fail with one-line errors, and the page is byte-identical for the same inputs.

The metrics use the keys the evaluate stage writes: those of the committed ``metrics/*.json`` of
the evaluated models (dense, glm5, iter_N, final), which one test feeds to the report as they are.
"""

from __future__ import annotations

import json
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote

import numpy as np
import pytest
from PIL import Image

from qsenn_core import report
from qsenn_core.errors import DataError
from qsenn_core.metric_columns import REPORT_COLUMNS

REPO = Path(__file__).resolve().parents[1]


def committed_metrics() -> dict[str, dict[str, object]]:
    """The evaluate stages' committed metrics files, in the report's row order."""
    iterations = sorted(REPO.glob("metrics/iter_*.json"), key=lambda p: int(p.stem[5:]))
    paths = [REPO / "metrics/dense.json", REPO / "metrics/glm5.json", *iterations,
             REPO / "metrics/final.json"]
    return {p.stem: json.loads(p.read_text()) for p in paths}


EVALUATE_KEYS = {key for row in committed_metrics().values() for key in row}

METRICS = {
    "dense": {"accuracy": 86.25, "diversity_at_5": 72.1, "dependence": 3.1, "n_features": 128},
    "glm5": {"accuracy": 78.4, "diversity_at_5": 70.0, "dependence": 8.2,
             "features_per_class": 4.9},
    "iter_1": {"accuracy": 84.0, "diversity_at_5": 88.3, "dependence": 2.5, "epochs": 10},
    "iter_2": {"accuracy": 84.7, "diversity_at_5": 90.3, "dependence": 2.4},
    "final": {"accuracy": 84.7, "alignment_r": 1.63, "binary_features": 60.0, "dependence": None},
}
#: Keys of METRICS that evaluate does not write: they must show only under "All metrics".
EXTRA_KEYS = {"epochs"}


class _Collector(HTMLParser):
    """Collects img sources, hrefs and the text of every table cell."""

    def __init__(self) -> None:
        super().__init__()
        self.srcs: list[str] = []
        self.hrefs: list[str] = []
        self.cells: list[tuple[str, str]] = []  # (class attribute, text)
        self._cell: list[str] | None = None
        self._cls = ""

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        if tag == "img":
            self.srcs.append(a["src"] or "")
        if tag == "a":
            self.hrefs.append(a["href"] or "")
        if tag in ("td", "th"):
            self._cell, self._cls = [], a.get("class") or ""

    def handle_data(self, data: str) -> None:
        if self._cell is not None:
            self._cell.append(data)

    def handle_endtag(self, tag: str) -> None:
        if tag in ("td", "th") and self._cell is not None:
            self.cells.append((self._cls, "".join(self._cell)))
            self._cell = None


def _png(path: Path) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((8, 8, 3), 100, np.uint8)).save(path)
    return path.name


def _build(out: Path, **kw: object) -> Path:
    rel = {n: f"explain/{n}.png" for n in ("matrix", "global one", "g2", "local_0", "local_1")}
    for r in rel.values():
        _png(out / r)
    args: dict[str, object] = dict(
        metrics=METRICS,
        assignment_png=rel["matrix"],
        global_pngs=[("001.Black <footed> Albatross", rel["global one"]), ("Cardinal", rel["g2"])],
        local_pngs=[("test 3: Cardinal", rel["local_0"]), ("test 9", rel["local_1"])],
        alignment_rows=[{"feature": "f17", "concepts": ["red crown", "red head"], "r": 0.31}],
        title="Q-SENN on synth",
    )
    args.update(kw)
    return report.build_report(out, **args)  # type: ignore[arg-type]


def test_the_sample_metrics_use_the_keys_evaluate_writes() -> None:
    assert {k for row in METRICS.values() for k in row} - EXTRA_KEYS <= EVALUATE_KEYS
    assert not EXTRA_KEYS & EVALUATE_KEYS


def test_committed_metrics_fill_every_report_column(tmp_path: Path) -> None:
    # the pipeline's own metrics files: every column of the report table is shown (the total
    # features column was once looked up under keys evaluate never wrote, and silently vanished)
    metrics = committed_metrics()
    parser = _Collector()
    parser.feed(report.build_report(tmp_path, metrics=metrics, assignment_png=None,
                                    global_pngs=[], local_pngs=[]).read_text())
    cells = [c for _, c in parser.cells]
    headers = [f"{c.label} {c.arrow}".strip() for c in REPORT_COLUMNS]
    assert "Total features ↓" in headers
    first = cells.index("Model") + 1
    assert cells[first:first + len(headers)] == headers
    # each row's total features is the n_features of its file, formatted as a count
    for name, row in metrics.items():
        start = cells.index(report.model_label(name))
        row_cells = cells[start + 1:start + 1 + len(REPORT_COLUMNS)]
        assert row_cells[headers.index("Total features ↓")] == f"{row['n_features']:.0f}"


def test_report_has_every_row_and_every_image_and_links_resolve(tmp_path: Path) -> None:
    path = _build(tmp_path)
    assert path == tmp_path / "index.html"
    text = path.read_text()
    parser = _Collector()
    parser.feed(text)
    names = {c for _, c in parser.cells}
    for label in ("Dense", "glm-saga₅", "Q-SENN iteration 1", "Q-SENN iteration 2"):
        assert label in names
    assert "Q-SENN (final)" in names
    assert len(parser.srcs) == 5
    for src in parser.srcs:
        assert not src.startswith(("/", "http", "file:"))
        assert (tmp_path / unquote(src)).is_file()
    assert set(parser.srcs) <= set(parser.hrefs)
    # Table-1 columns in the paper's order, only those some model has
    heads = [c for _, c in parser.cells if c.endswith(("↑", "↓")) or c == "Binary features"]
    assert heads[:7] == [
        "Accuracy ↑",
        "diversity@5 ↑",
        "Dependence γ ↓",
        "Alignment r ↑",
        "Binary features",
        "Features / class ↓",
        "Total features ↓",
    ]
    # escaped class name, and every extra metric in "All metrics"
    assert "001.Black &lt;footed&gt; Albatross" in text and "<footed>" not in text
    assert "epochs" in names and "red crown, red head" in names


def test_best_values_are_bold_and_numbers_formatted_per_column(tmp_path: Path) -> None:
    parser = _Collector()
    parser.feed(_build(tmp_path).read_text())
    best = [c for cls, c in parser.cells if "best" in cls.split()]
    # accuracy: highest 86.25 -> "86.2" (1 decimal as values >= 10); diversity 90.3;
    # dependence: lowest 2.40 (the None of "final" is skipped); alignment has one value -> no bold
    assert "86.2" in best and "90.3" in best and "2.40" in best
    assert "1.63" not in best
    metric_cells = [c for _, c in parser.cells]
    assert "84.0" in metric_cells  # an integral accuracy still shows one decimal like the others
    assert "–" in metric_cells  # the missing dependence of "final"


def test_report_is_deterministic_and_overwrites_atomically(tmp_path: Path) -> None:
    a = _build(tmp_path).read_bytes()
    b = _build(tmp_path).read_bytes()
    assert a == b
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_missing_or_absolute_images_are_one_line_errors(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="does not exist") as err:
        _build(tmp_path, local_pngs=[("x", "explain/nope.png")])
    assert "\n" not in str(err.value)
    assert not (tmp_path / "index.html").exists()
    with pytest.raises(DataError, match="relative"):
        _build(tmp_path, assignment_png=str(tmp_path / "explain" / "matrix.png"))
    path = _build(tmp_path, local_pngs=[("x", "explain/later.png")], check_links=False)
    assert "explain/later.png" in path.read_text()
    with pytest.raises(DataError, match="metrics"):
        _build(tmp_path, metrics={"dense": 3.0})


def test_optional_sections_are_left_out(tmp_path: Path) -> None:
    text = report.build_report(
        tmp_path,
        metrics={"final": {"accuracy": 50.0}},
        assignment_png=None,
        global_pngs=[],
        local_pngs=[],
    ).read_text()
    parser = _Collector()
    parser.feed(text)
    heads = [c for _, c in parser.cells]
    assert "Accuracy ↑" in heads and "diversity@5 ↑" not in heads
    assert "<img" not in text and 'id="alignment"' not in text and 'id="global"' not in text


def test_format_helpers() -> None:
    assert report.format_value(None) == "–"
    assert report.format_value(float("nan")) == "–"
    assert report.format_value(3) == "3" and report.format_value(3.0) == "3"
    assert report.format_value(3.14159) == "3.14" and report.format_value(2.0, 1) == "2.0"
    assert report.format_value(["a", 1.5]) == "a, 1.50"
    assert report.column_decimals([1, 2.0]) == 0
    assert report.column_decimals([85.13, 4.0]) == 1
    assert report.column_decimals([1.2, None]) == 2
    assert report.column_decimals(["x"]) is None
    assert report.model_label("iter_12") == "Q-SENN iteration 12"
    assert report.model_label("custom") == "custom"
