"""qsenn_core.compare on a real `dvc exp show --json` of the tiny project.

The sample (tests/data/exp_show_tiny.json) holds the workspace, the baseline commit ``main``, a
finished experiment ``fin1`` (``-S final=iter_1``) and a queued one (``noquant-queued``).
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import pytest

from qsenn_core.compare import (
    CompareError,
    experiments,
    load_exp_show,
    main,
    markdown_header,
    table,
    to_csv,
    to_markdown,
)
from qsenn_core.metric_columns import COMPARE_COLUMNS

SAMPLE = Path(__file__).parent / "data" / "exp_show_tiny.json"


@pytest.fixture
def shown() -> list[dict]:
    return json.loads(SAMPLE.read_text())


def metrics_of(shown: list[dict], name: str, path: str) -> dict:
    for row in shown:
        if row.get("name") == name:
            return row["data"]["metrics"][path]["data"]
        for group in row.get("experiments") or []:
            for rev in group["revs"]:
                if rev["name"] == name:
                    return rev["data"]["metrics"][path]["data"]
    raise KeyError(name)


def test_rows_are_baseline_and_finished_experiments(shown: list[dict]) -> None:
    rows = experiments(shown)
    assert [r.name for r in rows] == ["main", "fin1"]  # no workspace, no queued run
    assert rows[0].baseline is None and rows[1].baseline == "main"
    assert rows[0].changed == {}
    assert rows[1].changed == {"final": "iter_1"}
    assert [r.name for r in experiments(shown, workspace=True)] == ["workspace", "main", "fin1"]


def test_table_takes_the_final_metrics_of_each_experiment(shown: list[dict]) -> None:
    rows = table(experiments(shown))
    base = metrics_of(shown, "main", "metrics/final.json")
    exp = metrics_of(shown, "fin1", "metrics/final.json")
    assert base != exp
    for row, source in zip(rows, (base, exp), strict=True):
        for col in COMPARE_COLUMNS:
            expected = source.get(col.key)
            assert row[col.key] == (None if expected is None else pytest.approx(expected))
    assert rows[1]["changes"] == "final=iter_1"
    # iteration 1 has no previous layer: no "assignments changed" for fin1
    assert rows[1]["assignments_changed"] is None


def test_every_compare_column_is_a_key_evaluate_wrote(shown: list[dict]) -> None:
    # the sample is a real `dvc exp show`: the baseline's final model (iteration 2 of 2) has
    # every compare column filled, so no column looks up a key evaluate does not write
    row = table(experiments(shown))[0]
    assert [c.key for c in COMPARE_COLUMNS if row[c.key] is None] == []


def test_table_of_another_model(shown: list[dict]) -> None:
    rows = table(experiments(shown), "metrics/glm5.json")
    glm5 = metrics_of(shown, "main", "metrics/glm5.json")
    assert rows[0]["accuracy"] == pytest.approx(glm5["accuracy"])
    assert rows[0]["n_features"] == pytest.approx(glm5["n_features"])


def test_markdown_layout(shown: list[dict]) -> None:
    md = to_markdown(table(experiments(shown))).splitlines()
    headers = [c.strip() for c in md[0].strip("|").split("|")]
    assert headers[:3] == ["Experiment", "Baseline", "Changes"]
    assert headers[3:] == [markdown_header(c) for c in COMPARE_COLUMNS]
    assert "Accuracy (%) ↑" in headers and "Total features ↓" in headers
    assert "Alignment r ↑" in headers and "Assignments changed (%)" in headers
    assert len(md) == 2 + 2
    cells = [c.strip() for c in md[3].strip("|").split("|")]
    exp = metrics_of(shown, "fin1", "metrics/final.json")
    assert cells[:3] == ["fin1", "main", "final=iter_1"]
    keys = [c.key for c in COMPARE_COLUMNS]
    assert cells[3 + keys.index("accuracy")] == f"{exp['accuracy']:.1f}"
    assert cells[3 + keys.index("alignment_r")] == f"{exp['alignment_r']:.3f}"
    assert cells[3 + keys.index("n_features")] == f"{exp['n_features']:.0f}"
    assert cells[3 + keys.index("assignments_changed")] == "-"  # the missing metric
    assert [c.strip() for c in md[2].strip("|").split("|")][:3] == ["main", "-", "-"]


def test_csv_round_trips_full_precision(shown: list[dict]) -> None:
    rows = table(experiments(shown))
    parsed = list(csv.DictReader(io.StringIO(to_csv(rows))))
    assert [r["experiment"] for r in parsed] == ["main", "fin1"]
    exp = metrics_of(shown, "fin1", "metrics/final.json")
    assert float(parsed[1]["diversity_at_5"]) == exp["diversity_at_5"]
    assert parsed[1]["assignments_changed"] == ""


def test_removed_param_is_listed() -> None:
    def record(name: str, params: dict) -> dict:
        return {"rev": name * 8, "name": name, "error": None,
                "data": {"params": {"params.yaml": {"data": params}},
                         "metrics": {"metrics/final.json": {"data": {"accuracy": 1.0}}}}}

    base = record("a", {"iterations": {"1": {"epochs": 3}, "2": {"epochs": 3}}})
    base["experiments"] = [{"executor": None, "name": "b",
                            "revs": [record("b", {"iterations": {"1": {"epochs": 40}}})]}]
    rows = experiments([base])
    assert rows[1].changed == {"iterations.1.epochs": 40, "iterations.2.epochs": None}


def test_bad_input_is_one_line_error(tmp_path: Path) -> None:
    with pytest.raises(CompareError, match="expected a list"):
        experiments({"rev": "x"})  # type: ignore[arg-type]
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(CompareError, match="not JSON") as err:
        load_exp_show(str(bad))
    assert "\n" not in str(err.value)
    with pytest.raises(CompareError, match="missing.json"):
        load_exp_show(str(tmp_path / "missing.json"))


def test_cli_writes_markdown_and_csv(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    md, table_csv = tmp_path / "out" / "t.md", tmp_path / "t.csv"
    assert main(["--input", str(SAMPLE), "--md", str(md), "--csv", str(table_csv)]) == 0
    printed = capsys.readouterr().out
    assert printed == md.read_text()
    assert "| fin1 | main | final=iter_1 |" in printed
    header = table_csv.read_text().splitlines()[0].split(",")
    assert header == ["experiment", "baseline", "changes", *(c.key for c in COMPARE_COLUMNS)]


def test_cli_unknown_model_fails_with_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--input", str(SAMPLE), "--model", "iter_9"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "metrics/iter_9.json" in err


def test_by_seed_groups_runs_that_differ_only_in_seed(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from qsenn_core.compare import seed_groups, seed_markdown, seed_table

    def record(name: str, seed: int, quant: bool, acc: float, div: float) -> dict:
        return {"rev": name * 8, "name": name, "error": None,
                "data": {"params": {"params.yaml": {"data": {
                    "seed": seed, "quant": {"enabled": quant}}}},
                    "metrics": {"metrics/final.json": {"data": {
                        "accuracy": acc, "diversity_at_5": div}}}}}

    base = record("main", 0, True, 80.0, 60.0)
    base["experiments"] = [{"executor": None, "name": n, "revs": [r]} for n, r in (
        ("s1", record("s1", 1, True, 82.0, 62.0)),
        ("nq0", record("nq0", 0, False, 70.0, 50.0)),
        ("s2", record("s2", 2, True, 84.0, 61.0)),
        ("nq1", record("nq1", 1, False, 72.0, 54.0)))]
    groups = seed_groups(experiments([base]))
    assert [(g.label, g.seeds) for g in groups] == [("baseline", [0, 1, 2]),
                                                  ("quant.enabled=False", [0, 1])]
    rows = seed_table(groups)
    assert rows[0]["n_seeds"] == 3 and rows[0]["accuracy_mean"] == pytest.approx(82.0)
    assert rows[0]["accuracy_std"] == pytest.approx(2.0)  # sample std of 80, 82, 84
    assert rows[1]["diversity_at_5_mean"] == pytest.approx(52.0)
    assert rows[1]["diversity_at_5_std"] == pytest.approx(2 ** 1.5)
    assert rows[0]["dependence_mean"] is None
    md = seed_markdown(rows)
    assert md.splitlines()[2].startswith("| baseline | 3 | 82.0 ± 2.0 | 61.0 ± 1.0 | - |")
    source = tmp_path / "shown.json"
    source.write_text(json.dumps([base]))
    assert main(["--input", str(source), "--by-seed", "--csv", str(tmp_path / "s.csv")]) == 0
    out = capsys.readouterr().out
    assert "Seeds" in out.splitlines()[0] and "quant.enabled=False | 2 |" in out
    parsed = list(csv.DictReader((tmp_path / "s.csv").open()))
    assert [r["n_seeds"] for r in parsed] == ["3", "2"]
    assert float(parsed[1]["accuracy_std"]) == pytest.approx(2 ** 0.5)
