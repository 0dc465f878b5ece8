"""Sharing through DVC remotes: push from one clone, pull into another (local path and S3 via moto).

Clone A is a copy of the session's reproduced tiny project with a bare git origin and two DVC
remotes (a local folder, the default, and S3); each clone B is a fresh ``git clone`` of the origin
that pulls from one of them. S3 is a moto server on 127.0.0.1 at a free port; its endpoint and
(fake) credentials live only in the environment or in ``.dvc/config.local``.
"""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml
from dvc_project import Reproduced, commit_all, copy_project, git, ran_stages, run, tool_env

pytestmark = pytest.mark.slow

BUCKET = "qsenn-remote-test"
FAKE_KEY_ID = "QSENNFAKEKEYID"
FAKE_SECRET = "qsenn-fake-secret-never-committed"  # noqa: S105 - a moto test credential
EXP_NAME = "final-iter-1"
RUN_CACHE_N_FEATURES = 6  # select.n_features of a run that only the run-cache records


def set_param(root: Path, section: str, key: str, value: object) -> None:
    """Edit one value of the project's params.yaml."""
    params = yaml.safe_load((root / "params.yaml").read_text())
    params[section][key] = value
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="module")
def s3_endpoint() -> Iterator[str]:
    """A moto S3 server on 127.0.0.1 holding an empty bucket; stopped after the module."""
    boto3 = pytest.importorskip("boto3")
    server_mod = pytest.importorskip("moto.server")
    pytest.importorskip("dvc_s3")
    port = free_port()
    server = server_mod.ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    url = f"http://127.0.0.1:{port}"
    try:
        boto3.client("s3", endpoint_url=url, region_name="us-east-1",
                     aws_access_key_id=FAKE_KEY_ID,
                     aws_secret_access_key=FAKE_SECRET).create_bucket(Bucket=BUCKET)
        yield url
    finally:
        server.stop()


@dataclass
class Clones:
    """Clone A (the pipeline's results, pushed to both remotes) and one fresh clone per remote."""

    a: Path
    origin: Path
    storage: Path  # the local remote's folder
    s3_url: str
    endpoint: str
    env_a: dict[str, str]  # A reads its S3 credentials from the environment
    b: dict[str, Path]  # "local" / "s3" -> a `git clone` whose default remote is that one
    run_cache_selection: bytes  # sparse/selection.json of the run only A's run-cache knows


@pytest.fixture(scope="module")
def clones(reproduced: Reproduced, s3_endpoint: str,
           tmp_path_factory: pytest.TempPathFactory) -> Clones:
    """A pushes git and DVC data (with the run-cache) to both remotes; each B clones and pulls."""
    base = tmp_path_factory.mktemp("remote")
    storage, s3_url = base / "storage", f"s3://{BUCKET}/qsenn"
    env_a = tool_env(AWS_ACCESS_KEY_ID=FAKE_KEY_ID, AWS_SECRET_ACCESS_KEY=FAKE_SECRET,
                     AWS_DEFAULT_REGION="us-east-1")

    origin = base / "origin.git"
    run(["git", "init", "-q", "--bare", "-b", "main", str(origin)], base)
    a = copy_project(reproduced.root, base / "a")
    git(a, "remote", "add", "origin", str(origin))
    # name and URL of each remote are committed; the S3 endpoint only in .dvc/config.local
    run(["dvc", "remote", "add", "-d", "local", str(storage)], a)
    run(["dvc", "remote", "add", "s3", s3_url], a)
    run(["dvc", "remote", "modify", "--local", "s3", "endpointurl", s3_endpoint], a)
    commit_all(a, "dvc remotes")
    git(a, "push", "-q", "-u", "origin", "main")
    for remote in ("local", "s3"):
        run(["dvc", "push", "--run-cache", "-r", remote], a, env_a)
    # a run that no commit records, known only to A's run-cache: a smaller feature selection,
    # pushed from the workspace (`push --run-cache` uploads run records, not their outputs)
    set_param(a, "select", "n_features", RUN_CACHE_N_FEATURES)
    assert ran_stages(run(["dvc", "repro", "-s", "select_features"], a)) == ["select_features"]
    selection = (a / "sparse/selection.json").read_bytes()
    for remote in ("local", "s3"):
        run(["dvc", "push", "--run-cache", "-r", remote], a, env_a)
    git(a, "checkout", "HEAD", "--", "params.yaml", "dvc.lock")
    run(["dvc", "checkout", "-q", "--force"], a)
    assert (a / "sparse/selection.json").read_bytes() != selection

    b: dict[str, Path] = {}
    for kind in ("local", "s3"):
        git(base, "clone", "-q", str(origin), f"b_{kind}")
        clone = b[kind] = base / f"b_{kind}"
        if kind == "s3":  # B keeps endpoint and keys in its .dvc/config.local
            for option, value in (("endpointurl", s3_endpoint), ("access_key_id", FAKE_KEY_ID),
                                  ("secret_access_key", FAKE_SECRET)):
                run(["dvc", "remote", "modify", "--local", "s3", option, value], clone)
            run(["dvc", "remote", "default", "--local", "s3"], clone)
        run(["dvc", "pull", "--run-cache"], clone)
    return Clones(a, origin, storage, s3_url, s3_endpoint, env_a, b, selection)


@pytest.fixture(scope="module")
def experiment(clones: Clones) -> dict:
    """A runs an experiment and pushes it (git refs to origin, outputs to both remotes)."""
    a = clones.a
    out = run(["dvc", "exp", "run", "-n", EXP_NAME, "-S", "final=iter_1"], a, clones.env_a)
    # only what reads the final model (summarize, explain, atlas; align where the CLIP stages
    # are), after check_params validated the changed params
    assert {"check_params", "explain", "summarize", "atlas"} <= set(ran_stages(out)) <= {
        "check_params", "explain", "summarize", "align", "atlas"}
    metrics = json.loads((a / "metrics/final.json").read_text())
    assert metrics == json.loads((a / "metrics/iter_1.json").read_text())
    run(["dvc", "exp", "push", "origin", EXP_NAME], a, clones.env_a)
    run(["dvc", "exp", "push", "-r", "s3", "origin", EXP_NAME], a, clones.env_a)
    assert EXP_NAME in git(a, "ls-remote", "origin", "refs/exps/*")
    return metrics


def lock_outs(root: Path) -> dict[str, str]:
    """path -> md5 of every cached output in dvc.lock."""
    lock = yaml.safe_load((root / "dvc.lock").read_text())
    return {out["path"]: out["md5"] for stage in lock["stages"].values()
            for out in stage.get("outs", [])}


def test_both_remotes_hold_the_pushed_data(clones: Clones) -> None:
    assert any(p.is_file() for p in clones.storage.rglob("*")), "nothing in the local remote"
    assert (clones.storage / "runs").is_dir(), "no run-cache in the local remote"
    import boto3

    s3 = boto3.client("s3", endpoint_url=clones.endpoint, region_name="us-east-1",
                      aws_access_key_id=FAKE_KEY_ID, aws_secret_access_key=FAKE_SECRET)
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket=BUCKET).get("Contents", [])]
    assert any(k.startswith("qsenn/files/") for k in keys), keys[:5]
    assert any(k.startswith("qsenn/runs/") for k in keys), "no run-cache on S3"


@pytest.mark.parametrize("kind", ["local", "s3"])
def test_clone_and_pull_reruns_nothing(clones: Clones, kind: str) -> None:
    b = clones.b[kind]
    assert "up to date" in run(["dvc", "status"], b)
    assert ran_stages(run(["dvc", "repro"], b)) == []
    outs = lock_outs(b)
    assert "models/dense.pt" in outs and "features/iter_2.parquet" in outs
    for path in outs:
        assert (b / path).exists(), f"{path} was not pulled"
    assert (b / "models/iter_2.pt").read_bytes() == (clones.a / "models/iter_2.pt").read_bytes()
    assert any((b / ".dvc/cache/runs").rglob("*")), "dvc pull --run-cache brought no run-cache"


@pytest.mark.parametrize("kind", ["local", "s3"])
def test_pulled_run_cache_replaces_a_run_done_in_a(clones: Clones, kind: str) -> None:
    b = clones.b[kind]
    set_param(b, "select", "n_features", RUN_CACHE_N_FEATURES)
    out = run(["dvc", "repro", "--pull", "-s", "select_features"], b)
    # A ran it and pushed its run-cache: B checks the outputs out instead of running
    assert ran_stages(out) == [], out
    assert "is cached - skipping run" in out
    assert (b / "sparse/selection.json").read_bytes() == clones.run_cache_selection
    git(b, "checkout", "HEAD", "--", "params.yaml", "dvc.lock")
    run(["dvc", "checkout", "-q", "--force"], b)
    assert "up to date" in run(["dvc", "status"], b)


@pytest.mark.parametrize("kind", ["local", "s3"])
def test_experiment_pushed_from_a_is_applied_in_b(clones: Clones, experiment: dict,
                                                   kind: str) -> None:
    b = clones.b[kind]
    run(["dvc", "exp", "pull", "origin", EXP_NAME], b)
    assert EXP_NAME in run(["dvc", "exp", "list", "--name-only"], b)
    run(["dvc", "exp", "apply", EXP_NAME], b)
    assert yaml.safe_load((b / "params.yaml").read_text())["final"] == "iter_1"
    assert json.loads((b / "metrics/final.json").read_text()) == experiment
    # the experiment's outputs came with it: nothing to rerun in B
    assert "up to date" in run(["dvc", "status"], b)
    for path in lock_outs(b):
        assert (b / path).exists(), f"{path} of the experiment is missing in B"


def test_credentials_and_endpoint_are_never_committed(clones: Clones) -> None:
    committed = git(clones.a, "show", "HEAD:.dvc/config")
    assert clones.s3_url in committed  # the remotes' names and URLs are shared through git
    b = clones.b["s3"]
    tracked = git(b, "ls-files").split()
    assert ".dvc/config.local" not in tracked
    for path in tracked:
        text = (b / path).read_bytes()
        for secret in (FAKE_SECRET, FAKE_KEY_ID, "endpointurl", clones.endpoint):
            assert secret.encode() not in text, f"{secret} committed in {path}"
    local = (b / ".dvc/config.local").read_text()
    assert FAKE_SECRET in local and clones.endpoint in local
