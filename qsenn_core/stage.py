"""Shared entry point of the stage scripts: logging set-up and one-line errors."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable, Sequence

from qsenn_core.errors import QsennError
from qsenn_core.params import Params, load_params

log = logging.getLogger("qsenn")


def stage_parser(description: str) -> argparse.ArgumentParser:
    """An argument parser with the ``--params`` option every stage takes."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--params", default="params.yaml", help="params file")
    return parser


def run_stage(
    main: Callable[[argparse.Namespace, Params], None],
    parser: argparse.ArgumentParser,
    argv: Sequence[str] | None = None,
    *,
    relaunch: Callable[[Params, list[str]], int | None] | None = None,
    cleanup: Callable[[], None] | None = None,
) -> int:
    """Parse argv, load and validate params, run ``main``; expected errors become one stderr line.

    ``relaunch(params, [script, *argv])`` may run the script again elsewhere and return that
    run's exit code (training under torchrun: :func:`qsenn_core.distributed.run_distributed_stage`);
    ``None`` means go on here. ``cleanup`` runs after ``main``, also when it fails.
    Returns the process exit code: 0 on success, 1 for a :class:`QsennError`, 130 on Ctrl-C.
    """
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parser.parse_args(argv)
    try:
        params = load_params(args.params)
        if relaunch is not None:
            code = relaunch(params, [sys.argv[0], *argv])
            if code is not None:
                return code
        try:
            main(args, params)
        finally:
            if cleanup is not None:
                cleanup()
    except QsennError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130
    return 0
