"""Benchmark: the default `dvc repro` end to end, with the time of every stage.

Without ``--run`` it reads the last repro of the project: each stage's end is the newest
modification time among its outputs in ``dvc.lock``, its time the gap to the previous stage's
end (DVC runs stages one after the other). With ``--run`` it first runs ``dvc repro --force``
(every stage, same params: the outputs come out byte-identical on CPU) and times it.

    .venv/bin/python bench/bench_repro.py [--project .] [--run]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

import yaml

GOAL_S = 600.0


def newest_mtime(path: Path) -> float | None:
    """The newest modification time of a file, or of the files under a folder."""
    if path.is_file():
        return path.stat().st_mtime
    if path.is_dir():
        times = [p.stat().st_mtime for p in path.rglob("*") if p.is_file()]
        return max(times) if times else None
    return None


def stage_ends(project: Path) -> list[tuple[float, str]]:
    """(end time, stage) for every stage in dvc.lock, sorted by end time."""
    lock = yaml.safe_load((project / "dvc.lock").read_text())
    ends = []
    for name, stage in lock["stages"].items():
        times = [newest_mtime(project / out["path"]) for out in stage.get("outs", [])]
        times = [t for t in times if t is not None]
        if times:
            ends.append((max(times), name))
    return sorted(ends)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--project", type=Path, default=Path("."))
    parser.add_argument("--run", action="store_true", help="run `dvc repro --force` first")
    args = parser.parse_args()
    project = args.project.resolve()
    start = None
    if args.run:
        dvc = Path(sys.executable).parent / "dvc"
        env = dict(os.environ, PATH=f"{dvc.parent}{os.pathsep}{os.environ['PATH']}")
        start = time.time()
        subprocess.run([str(dvc), "repro", "--force"], cwd=project, env=env, check=True)
        total = time.time() - start
    ends = stage_ends(project)
    if not ends:
        print("no stage outputs found: run `dvc repro` first", file=sys.stderr)
        return 1
    print(f"{'stage':<18} {'seconds':>8}")
    print("-" * 27)
    prev = start
    for end, name in ends:
        took = f"{end - prev:8.1f}" if prev is not None else f"{'?':>8}"
        print(f"{name:<18} {took}")
        prev = end
    if start is None:
        total = ends[-1][0] - ends[0][0]
        print(f"from the end of {ends[0][1]} to the end of {ends[-1][1]}: {total:.0f} s")
    else:
        print(f"dvc repro --force: {total:.0f} s (goal <= {GOAL_S:.0f} s: "
              f"{'ok' if total <= GOAL_S else 'missed'})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
