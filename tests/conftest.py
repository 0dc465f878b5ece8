"""Fixtures shared by several test files."""

from __future__ import annotations

import pytest
from dvc_project import Reproduced, commit_all, make_tiny_project, run

from qsenn_core.device import torch_threads


@pytest.fixture(scope="session")
def reproduced(tmp_path_factory: pytest.TempPathFactory) -> Reproduced:
    """Run the tiny pipeline once per session; tests take copies (``dvc_project.copy_project``)."""
    root = make_tiny_project(tmp_path_factory.mktemp("reproduced"))
    output = run(["dvc", "repro"], root)
    commit_all(root, "repro")
    return Reproduced(root, output)


@pytest.fixture
def one_thread():
    """One intra-op thread: on a small shared CPU, much faster for tiny matrices (CLIP tests)."""
    with torch_threads(1):
        yield
