"""Paper presets: YAML files under ``params/`` applied on top of ``params.yaml`` as one experiment.

A preset holds only the keys whose values differ from ``params.yaml`` (the CPU default), with a
header citing the paper section it comes from. ``extends: other.yaml`` (a path relative to the
preset) starts from another preset. Mappings merge key by key, except ``iterations``: a preset
that names it gives the whole chain, so iterations of ``params.yaml`` that it leaves out are
dropped.

``python -m qsenn_core.presets params/paper-cub-resnet50.yaml [-S KEY=VALUE ...] [--dry-run]
[dvc exp run options]`` validates the merged params (seconds, before any stage runs) and then
runs ``dvc exp run`` with one Hydra ``-S`` override per changed leaf: ``key=value`` for a key of
``params.yaml``, ``+key=value`` for a new one (``+iterations.4={prev: iter_3, ...}``) and
``~iterations.K`` for a dropped iteration. ``-S KEY=VALUE`` here changes one value on top of
the preset before the check (``-S seed=3``, ``-S data.root=/data/cub``); other options
(``--queue``, ``-n NAME``, ``--temp``) go to ``dvc exp run`` as they are.
"""

from __future__ import annotations

import argparse
import copy
import logging
import re
import shlex
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

from qsenn_core.errors import ParamsError, QsennError
from qsenn_core.params import Params, params_from_dict

log = logging.getLogger(__name__)

#: The key of a preset that names the preset it starts from.
EXTENDS = "extends"

#: Top-level mappings that a preset replaces as a whole instead of merging into.
REPLACED_KEYS = frozenset({"iterations"})

# Strings Hydra reads back unchanged without quotes (paths, weight and model names); the rest
# (spaces, numbers- or bool-like words, ...) are quoted.
_PLAIN_STRING = re.compile(r"[A-Za-z_/][A-Za-z0-9_/.:\-]*")
_HYDRA_WORDS = frozenset({"true", "false", "null", "nan", "inf"})

#: Options of ``dvc exp run`` (3.x) that take a value.
_DVC_VALUE_OPTIONS = (("-n", "--name"), ("-m", "--message"), ("-j", "--jobs"),
                      ("-C", "--copy-paths"))


def _read_yaml(path: Path, what: str = "preset") -> dict[str, Any]:
    """A preset (or params) file as a mapping; an empty file is an empty mapping."""
    if not path.is_file():
        where = " (presets live in params/)" if what == "preset" else ""
        raise ParamsError(f"{path}: {what} file not found{where}")
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        raise ParamsError(f"{path}: not valid YAML ({str(err).splitlines()[0]})") from None
    raw = {} if raw is None else raw
    if not isinstance(raw, dict):
        raise ParamsError(f"{path}: expected a mapping at the top level")
    return raw


def merge_preset(base: dict[str, Any], preset: dict[str, Any], *,
                 top: bool = True) -> dict[str, Any]:
    """``base`` with ``preset``'s values: mappings merge key by key, ``iterations`` is replaced.

    With ``top=False`` ``iterations`` merges too (one ``-S iterations.4.epochs=20`` changes one
    value). Neither argument is modified.
    """
    merged = copy.deepcopy(base)
    for key, value in preset.items():
        old = merged.get(key)
        if isinstance(value, dict) and isinstance(old, dict) and not (top and key in REPLACED_KEYS):
            merged[key] = merge_preset(old, value, top=False)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def read_preset(path: str | Path, _seen: tuple[Path, ...] = ()) -> dict[str, Any]:
    """The keys of preset ``path`` with those of the presets it extends (``extends:``) beneath."""
    path = Path(path)
    if path.resolve() in _seen:
        chain = " -> ".join(p.name for p in (*_seen, path.resolve()))
        raise ParamsError(f"{path}: {EXTENDS}: presets extend each other in a loop ({chain})")
    raw = _read_yaml(path)
    parent = raw.pop(EXTENDS, None)
    if parent is None:
        return raw
    if not isinstance(parent, str) or not parent.strip():
        raise ParamsError(f"{path}: {EXTENDS}: expected the file name of another preset")
    below = read_preset(path.parent / parent, (*_seen, path.resolve()))
    return merge_preset(below, raw)


def set_key(params: dict[str, Any], assignment: str) -> dict[str, Any]:
    """``params`` with ``KEY=VALUE`` applied (dotted key, VALUE read as YAML: ``seed=3``)."""
    key, sep, text = assignment.partition("=")
    parts = key.strip().split(".")
    if not sep or not all(parts):
        raise ParamsError(f"-S {assignment}: expected KEY=VALUE (e.g. -S seed=3)")
    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError:
        raise ParamsError(f"-S {assignment}: {key} is not a YAML value") from None
    nested: Any = value
    for part in reversed(parts):
        nested = {part: nested}
    return merge_preset(params, nested, top=False)


def load_raw(base_path: str | Path, preset_path: str | Path,
             assignments: Sequence[str] = ()) -> tuple[dict[str, Any], dict[str, Any]]:
    """(params.yaml as read, params.yaml with the preset, then the ``-S`` assignments, applied).

    The merged params are validated: a bad value raises one :class:`ParamsError` line that
    names the preset file and the key.
    """
    base = _read_yaml(Path(base_path), "params")
    merged = merge_preset(base, read_preset(preset_path))
    for assignment in assignments:
        merged = set_key(merged, assignment)
    try:
        params_from_dict(merged)
    except ParamsError as err:
        raise ParamsError(f"{preset_path}: {err}") from None
    return base, merged


def load_preset(preset_path: str | Path, base_path: str | Path = "params.yaml") -> Params:
    """The validated :class:`Params` of ``base_path`` with preset ``preset_path`` applied."""
    _, merged = load_raw(base_path, preset_path)
    return params_from_dict(merged)


def format_value(value: Any, key: str) -> str:
    """``value`` in Hydra's override grammar (what ``dvc exp run -S`` parses)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        if _PLAIN_STRING.fullmatch(value) and value.lower() not in _HYDRA_WORDS:
            return value
        if "'" in value or "\\" in value:
            raise ParamsError(f"{key}: {value!r} holds a quote or backslash, which a dvc -S "
                              "override cannot carry; set it in params.yaml")
        return f"'{value}'"
    if isinstance(value, list):
        return "[" + ", ".join(format_value(v, f"{key}[{i}]") for i, v in enumerate(value)) + "]"
    if isinstance(value, dict):
        items = (f"{k}: {format_value(v, f'{key}.{k}')}" for k, v in value.items())
        return "{" + ", ".join(items) + "}"
    raise ParamsError(f"{key}: {value!r} cannot be written as a dvc -S override")


def dvc_overrides(base: dict[str, Any], target: dict[str, Any]) -> list[str]:
    """The ``-S`` overrides that turn params ``base`` into ``target``.

    A changed leaf gives ``key=value``; a key that ``base`` lacks gives ``+key=value`` (a new
    mapping as one value, as Hydra adds no intermediate keys); a key of a replaced mapping
    (``iterations``) that ``target`` lacks gives ``~key``. Other keys are never deleted.
    """
    overrides: list[str] = []

    def walk(old: dict[str, Any], new: dict[str, Any], prefix: str, replaced: bool) -> None:
        for key, value in new.items():
            path = f"{prefix}{key}"
            if key not in old:
                overrides.append(f"+{path}={format_value(value, path)}")
            elif isinstance(value, dict) and isinstance(old[key], dict):
                walk(old[key], value, f"{path}.", replaced or (not prefix and key in REPLACED_KEYS))
            elif value != old[key] or type(value) is not type(old[key]):
                overrides.append(f"{path}={format_value(value, path)}")
        if replaced:
            overrides.extend(f"~{prefix}{key}" for key in old if key not in new)

    walk(base, target, "", False)
    return overrides


def exp_run_command(preset_path: str | Path, base_path: str | Path = "params.yaml",
                    assignments: Sequence[str] = (), dvc_args: Sequence[str] = ()) -> list[str]:
    """``["dvc", "exp", "run", *dvc_args, "-S", override, ...]`` for the preset (validated)."""
    base, merged = load_raw(base_path, preset_path, assignments)
    command = ["dvc", "exp", "run", *dvc_args]
    for override in dvc_overrides(base, merged):
        command += ["-S", override]
    return command


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m qsenn_core.presets", allow_abbrev=False,  # dvc's --dry is not --dry-run
        description="Run `dvc exp run` with a paper preset from params/ applied to params.yaml. "
                    "Options not listed here (--queue, -n NAME, --temp, ...) go to dvc exp run.")
    parser.add_argument("preset", help="preset file, e.g. params/paper-cub-resnet50.yaml")
    parser.add_argument("-S", "--set-param", dest="assignments", action="append", default=[],
                        metavar="KEY=VALUE",
                        help="change one value on top of the preset (YAML value), e.g. -S seed=3")
    parser.add_argument("--dry-run", action="store_true",
                        help="print the dvc exp run command instead of running it")
    # dvc exp run's options that take a value, declared so that their value is not read as the
    # preset when they come first; they are passed on unchanged
    for flag, long in _DVC_VALUE_OPTIONS:
        parser.add_argument(flag, long, dest=long[2:].replace("-", "_"), metavar="VALUE",
                            action="append", default=[], help=f"passed to dvc exp run {flag}")
    return parser


def _dvc_value_args(args: argparse.Namespace) -> list[str]:
    """The dvc exp run options of :data:`_DVC_VALUE_OPTIONS` that were given, as argv."""
    out: list[str] = []
    for flag, long in _DVC_VALUE_OPTIONS:
        for value in getattr(args, long[2:].replace("-", "_")):
            out += [flag, value]
    return out


def main(argv: Sequence[str] | None = None) -> int:
    """Command line; returns the exit code (dvc's, or 1 with one stderr line for bad params)."""
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    args, dvc_args = _parser().parse_known_args(argv)
    try:
        command = exp_run_command(args.preset, "params.yaml", args.assignments,
                                  [*_dvc_value_args(args), *dvc_args])
    except QsennError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    if args.dry_run:
        sys.stdout.write(shlex.join(command) + "\n")
        return 0
    log.info("%s", shlex.join(command))
    # the dvc of this interpreter's environment, whatever `dvc` on PATH is
    return subprocess.run([sys.executable, "-m", *command], check=False).returncode


if __name__ == "__main__":
    sys.exit(main())
