"""Benchmark: no-op `dvc status` and `dvc repro` on an up-to-date project (goal <= 3 s each).

Times each command ``--repeats`` times in the project folder and prints one table: the first
(cold: DVC may hash files it has not seen) and the min / median / max of the rest. The project
must be up to date: before timing `dvc repro` the script checks `dvc status --json` and refuses
if any stage changed (a repro would run it), and it fails if a timed repro ran a stage.
`--commands status` times only the read-only command.

    .venv/bin/python bench/bench_dvc_noop.py [PROJECT] [--repeats 5] [--commands status,repro]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

GOAL_S = 3.0
COMMANDS = {"status": ["status"], "repro": ["repro"]}


def dvc_executable() -> str:
    """The dvc beside this interpreter (the project's venv), else the one on PATH."""
    local = Path(sys.executable).parent / "dvc"
    return str(local) if local.is_file() else (shutil.which("dvc") or "dvc")


def tool_env() -> dict[str, str]:
    """PATH with this interpreter's folder first: stage commands call `python`."""
    return dict(os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")


def run_dvc(dvc: str, args: list[str], project: Path) -> tuple[float, str]:
    """Wall time and output of one dvc command; exits with its output tail when it fails."""
    t0 = time.perf_counter()
    proc = subprocess.run([dvc, *args], cwd=project, env=tool_env(), capture_output=True,
                          text=True, check=False)
    seconds = time.perf_counter() - t0
    if proc.returncode != 0:
        sys.exit(f"error: dvc {' '.join(args)} failed in {project}: "
                 f"{(proc.stderr.strip().splitlines() or ['no output'])[-1]}")
    return seconds, proc.stdout + proc.stderr


def changed_stages(dvc: str, project: Path) -> list[str]:
    """Names of the stages `dvc status` reports as changed (empty: a repro would do nothing)."""
    _, out = run_dvc(dvc, ["status", "--json"], project)
    start = out.find("{")
    return sorted(json.loads(out[start:]) if start >= 0 else {})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("project", nargs="?", type=Path,
                        default=Path(__file__).resolve().parents[1],
                        help="DVC project folder (default: this repository)")
    parser.add_argument("--repeats", type=int, default=5, help="runs per command (>= 2)")
    parser.add_argument("--commands", default="status,repro",
                        help="comma-separated subset of: " + ", ".join(COMMANDS))
    args = parser.parse_args()
    commands = [c.strip() for c in args.commands.split(",") if c.strip()]
    unknown = [c for c in commands if c not in COMMANDS]
    if unknown or not commands:
        sys.exit(f"error: --commands: unknown {unknown or 'empty list'}; use {', '.join(COMMANDS)}")
    if args.repeats < 2:
        sys.exit("error: --repeats must be >= 2")
    project = args.project.resolve()
    if not (project / "dvc.yaml").is_file():
        sys.exit(f"error: {project}: no dvc.yaml")
    dvc = dvc_executable()
    if "repro" in commands:
        changed = changed_stages(dvc, project)
        if changed:
            sys.exit(f"error: {project} is not up to date ({', '.join(changed[:5])} changed); "
                     "a timed `dvc repro` would run stages")

    print(f"project: {project}")
    print(f"dvc: {dvc}, {args.repeats} runs per command, goal <= {GOAL_S:.0f} s")
    header = f"{'command':<12} {'first':>7} {'min':>7} {'median':>7} {'max':>7}  goal"
    print(header)
    print("-" * len(header))
    for name in commands:
        times = []
        for _ in range(args.repeats):
            seconds, out = run_dvc(dvc, COMMANDS[name], project)
            if name == "repro" and "Running stage" in out:
                sys.exit("error: the timed `dvc repro` ran a stage; the project was not up to date")
            times.append(seconds)
        warm = times[1:]
        verdict = "ok" if statistics.median(warm) <= GOAL_S else "MISSED"
        print(f"dvc {name:<8} {times[0]:7.2f} {min(warm):7.2f} {statistics.median(warm):7.2f} "
              f"{max(warm):7.2f}  {verdict}")


if __name__ == "__main__":
    main()
