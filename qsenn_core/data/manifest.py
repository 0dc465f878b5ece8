"""A content manifest of the dataset folder: one small file that the pipeline's stages depend on.

DVC re-walks a folder dependency once per stage that declares it. With the dataset folder
(8,000 files for ``synth``, a million for ImageNet) as a dependency of every stage, a no-op
``dvc status`` spends most of its time in those walks. Instead one stage (``index_data``)
depends on the folder and writes this manifest; the other stages depend on the manifest, which
changes exactly when a file under the dataset root is added, removed or modified.
"""

from __future__ import annotations

import hashlib
import logging
import os
from pathlib import Path

from tqdm import tqdm

from qsenn_core.errors import DataError
from qsenn_core.io import write_text

log = logging.getLogger(__name__)

_CHUNK = 1 << 20
#: Temporary and hidden entries (``.foo.tmp`` of an interrupted write, ``.DS_Store``) are skipped.
_HIDDEN_PREFIX = "."


def dataset_files(root: str | Path) -> list[Path]:
    """Every regular file under ``root``, as sorted POSIX paths relative to ``root``.

    Hidden files and folders (name starting with ``.``) are skipped.

    Raises:
        DataError: ``root`` is not a folder.
    """
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"data.root: dataset folder {root} not found (run prepare_data for "
                        "synth, or put the dataset there; see README 'Datasets')")
    files: list[Path] = []
    for folder, dirs, names in os.walk(root):
        dirs[:] = [d for d in dirs if not d.startswith(_HIDDEN_PREFIX)]
        base = Path(folder).relative_to(root)
        files += [base / n for n in names if not n.startswith(_HIDDEN_PREFIX)]
    return sorted(files, key=lambda p: p.as_posix())


def file_md5(path: Path) -> str:
    """The MD5 hex digest of a file's bytes (read in 1 MiB chunks)."""
    digest = hashlib.md5(usedforsecurity=False)
    with path.open("rb") as f:
        while chunk := f.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def manifest_text(root: str | Path, progress: bool = True) -> str:
    """``<md5>  <size>  <relative path>`` per file, sorted by path: the same bytes for the same
    content on every machine (no timestamps, no absolute paths)."""
    root = Path(root)
    files = dataset_files(root)
    if not files:
        raise DataError(f"data.root: dataset folder {root} is empty")
    lines = []
    for rel in tqdm(files, desc="index dataset", unit="file", disable=not progress):
        path = root / rel
        lines.append(f"{file_md5(path)}  {path.stat().st_size}  {rel.as_posix()}\n")
    return "".join(lines)


def write_manifest(root: str | Path, out: str | Path, progress: bool = True) -> int:
    """Write the manifest of ``root`` to ``out`` atomically; return the number of files."""
    text = manifest_text(root, progress)
    write_text(out, text)
    n = text.count("\n")
    log.info("indexed %d files under %s into %s", n, root, out)
    return n
