"""Tests of the feature atlas (``reports/atlas``): cards, two-way links, resolving pictures, the
mean-shift clusters, the stage script, and the page in a real headless Chromium."""

from __future__ import annotations

import base64
import io
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image
from tiny_qsenn import REPO, SELECTION, WEIGHT, Tiny, make_tiny

from qsenn_core.atlas import build_atlas, top_rows, used_positions
from qsenn_core.feature_files import read_features
from qsenn_core.metrics import mean_shift_1d

#: Debian's package installs ``chromium``; other names are the usual ones elsewhere.
CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
#: How long the browser may take to start, load the page and answer (seconds).
BROWSER_TIMEOUT = 60


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Tiny:
    return make_tiny(tmp_path_factory.mktemp("tiny_atlas"))


@pytest.fixture(scope="module")
def atlas(tiny: Tiny) -> Path:
    return build_atlas(tiny.params, tiny.model_path, tiny.features_path,
                       tiny.root / "reports" / "atlas", tiny.concepts_path)


def _ids(page: str) -> set[str]:
    return set(re.findall(r'id="([^"]+)"', page))


def _section(page: str, anchor: str) -> str:
    match = re.search(rf'<section class="card" id="{anchor}">(.*?)</section>', page, re.S)
    assert match, anchor
    return match.group(1)


# ----------------------------------------------------------------------------------------------
# content
# ----------------------------------------------------------------------------------------------


def test_one_card_per_used_feature_and_class_linked_both_ways(atlas: Path, tiny: Tiny) -> None:
    page = atlas.read_text()
    ids = _ids(page)
    used = [SELECTION[j] for j in used_positions(WEIGHT.numpy())]
    assert sorted(i for i in ids if re.fullmatch(r"f\d+", i)) == sorted(f"f{f}" for f in used)
    assert {f"class-{c}" for c in range(3)} <= ids
    for href in re.findall(r'href="#([^"]+)"', page):
        assert href in ids, href  # every in-page link lands on a card
    for j, feature in enumerate(SELECTION):
        card = _section(page, f"f{feature}")
        assert "has_wing_color::c" + str(feature) in card  # its CLIP concepts
        for c in range(3):
            w = float(WEIGHT[c, j])
            link = f'href="#class-{c}">{"+" if w > 0 else "−"}{tiny.index.class_names[c]}<'
            assert (link in card) == (w != 0), (feature, c)
            back = _section(page, f"class-{c}")
            assert (f'href="#f{feature}"' in back) == (w != 0), (feature, c)


def test_every_picture_resolves_and_shows_something(atlas: Path) -> None:
    page = atlas.read_text()
    sources = re.findall(r'<img src="([^"]+)"', page)
    assert len(sources) == 2 * 4 + 3  # top images + histogram per feature, one per class
    for src in sources:
        with Image.open(atlas.parent / src) as image:
            assert image.format == "PNG"
            pixels = np.asarray(image.convert("RGB"))
        assert pixels.std() > 10, src


def test_histograms_show_the_mean_shift_clusters_of_each_feature(atlas: Path,
                                                                  tiny: Tiny) -> None:
    page = atlas.read_text()
    features, _, _ = read_features(tiny.features_path, "train")
    counts = [mean_shift_1d(features[:, j]).n_clusters for j in range(len(SELECTION))]
    assert f"<dt>binary features (2 clusters)</dt><dd>{counts.count(2)}</dd>" in page
    for feature in SELECTION:
        assert f'alt="activation histogram of f{feature}"' in _section(page, f"f{feature}")
    hists = {(atlas.parent / f"features/f{f:04d}_hist.png").read_bytes() for f in SELECTION}
    assert len(hists) == len(SELECTION)


def test_top_rows_are_the_largest_first_ties_by_row() -> None:
    assert top_rows(np.array([1.0, 3.0, 3.0, 2.0, -1.0]), 3).tolist() == [1, 2, 3]
    assert used_positions(np.array([[0.0, 1.0, 0.0], [0.0, 0.0, -1.0]])) == [1, 2]


def test_stage_script_writes_the_same_bytes(atlas: Path, tiny: Tiny, tmp_path: Path) -> None:
    out = tmp_path / "atlas"
    proc = subprocess.run(
        [sys.executable, str(REPO / "stages" / "atlas.py"), str(tiny.model_path),
         str(tiny.features_path), str(out), "--concepts", str(tiny.concepts_path),
         "--params", str(tiny.params_path)],
        cwd=tmp_path, capture_output=True, text=True, check=False,
        env=dict(os.environ, OMP_NUM_THREADS="1"))
    assert proc.returncode == 0, proc.stderr[-2000:]
    files = sorted(p.relative_to(atlas.parent) for p in atlas.parent.rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(out) for p in out.rglob("*") if p.is_file())
    for rel in files:
        if rel.name != "index.html":  # the page names the model path it was given
            assert (out / rel).read_bytes() == (atlas.parent / rel).read_bytes(), rel
    # a file that is no model: one error line naming it, exit 1, nothing written
    proc = subprocess.run(
        [sys.executable, str(REPO / "stages" / "atlas.py"), str(tiny.features_path),
         str(tiny.features_path), str(tmp_path / "none"), "--params", str(tiny.params_path)],
        cwd=tmp_path, capture_output=True, text=True, check=False)
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error: ")]
    assert proc.returncode == 1 and len(errors) == 1 and "iter_3.parquet" in errors[0]
    assert not (tmp_path / "none").exists()


# ----------------------------------------------------------------------------------------------
# in a real browser
# ----------------------------------------------------------------------------------------------


def _chromium() -> str | None:
    return next((found for name in CHROMIUM_NAMES if (found := shutil.which(name))), None)


class DevTools:
    """The Chrome DevTools Protocol over ``--remote-debugging-pipe`` (fd 3 in, fd 4 out): JSON
    messages separated by NUL bytes. No network port, no extra package."""

    def __init__(self, binary: str, profile: Path) -> None:
        to_browser_r, self._to_browser = os.pipe()
        self._from_browser, from_browser_w = os.pipe()

        def wire_fds() -> None:  # in the child: the browser expects exactly fds 3 and 4
            read_end, write_end = os.dup(to_browser_r), os.dup(from_browser_w)
            os.dup2(read_end, 3)
            os.dup2(write_end, 4)

        self.process = subprocess.Popen(
            [binary, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
             "--disable-extensions", "--disable-background-networking", "--hide-scrollbars",
             f"--user-data-dir={profile}", "--window-size=1280,1000",
             "--remote-debugging-pipe", "about:blank"],
            preexec_fn=wire_fds, close_fds=False, stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        os.close(to_browser_r)
        os.close(from_browser_w)
        self._buffer = b""
        self._next_id = 0
        self.events: list[dict[str, Any]] = []

    def _receive(self) -> dict[str, Any]:
        while b"\0" not in self._buffer:
            chunk = os.read(self._from_browser, 1 << 16)
            if not chunk:
                raise RuntimeError("the browser closed the DevTools pipe")
            self._buffer += chunk
        message, _, self._buffer = self._buffer.partition(b"\0")
        return json.loads(message)

    def call(self, method: str, params: dict[str, Any] | None = None,
             session: str | None = None) -> dict[str, Any]:
        self._next_id += 1
        message: dict[str, Any] = {"id": self._next_id, "method": method, "params": params or {}}
        if session:
            message["sessionId"] = session
        os.write(self._to_browser, json.dumps(message).encode() + b"\0")
        while True:
            reply = self._receive()
            if reply.get("id") == self._next_id:
                assert "error" not in reply, reply
                return reply["result"]
            self.events.append(reply)

    def wait_for(self, event: str) -> None:
        while not any(e.get("method") == event for e in self.events):
            self.events.append(self._receive())

    def close(self) -> None:
        try:
            self.call("Browser.close")
            self.process.wait(timeout=10)
        except (OSError, RuntimeError, subprocess.TimeoutExpired):
            self.process.kill()
            self.process.wait()
        os.close(self._to_browser)
        os.close(self._from_browser)


def _problems(events: list[dict[str, Any]]) -> list[str]:
    """Console errors, uncaught exceptions and failed loads among the DevTools events."""
    found = []
    for e in events:
        params = e.get("params", {})
        if e.get("method") == "Runtime.consoleAPICalled" and params.get("type") in (
                "error", "assert"):
            found.append(f"console.{params['type']}: {params.get('args')}")
        elif e.get("method") == "Runtime.exceptionThrown":
            found.append(f"exception: {params.get('exceptionDetails')}")
        elif e.get("method") == "Log.entryAdded" and params["entry"]["level"] == "error":
            found.append(f"{params['entry']['text']} {params['entry'].get('url', '')}")
    return found


def test_atlas_in_headless_chromium(atlas: Path, tmp_path: Path) -> None:
    binary = _chromium()
    if binary is None:
        pytest.skip("no Chromium binary on PATH (Debian: apt-get install chromium)")
    browser = DevTools(binary, Path(tempfile.mkdtemp(dir=tmp_path)))
    try:
        target = browser.call("Target.createTarget", {"url": "about:blank"})["targetId"]
        session = browser.call("Target.attachToTarget",
                               {"targetId": target, "flatten": True})["sessionId"]
        for domain in ("Page", "Runtime", "Log"):
            browser.call(f"{domain}.enable", session=session)
        browser.call("Page.navigate", {"url": atlas.resolve().as_uri()}, session=session)
        browser.wait_for("Page.loadEventFired")
        images = browser.call("Runtime.evaluate", {
            "expression": "JSON.stringify(Array.from(document.images, i => "
                          "[i.getAttribute('src'), i.complete, i.naturalWidth]))",
            "returnByValue": True}, session=session)["result"]["value"]
        shot = browser.call("Page.captureScreenshot", {"format": "png"}, session=session)
    finally:
        browser.close()
    loaded = json.loads(images)
    assert len(loaded) == 11
    broken = [src for src, complete, width in loaded if not complete or width == 0]
    assert broken == [], broken
    assert _problems(browser.events) == []
    with Image.open(io.BytesIO(base64.b64decode(shot["data"]))) as png:
        pixels = np.asarray(png.convert("RGB"))
    assert pixels.shape[1] == 1280 and pixels.shape[0] > 500  # the viewport, less the frame
    assert pixels.std() > 15  # not a blank page
    assert len(np.unique(pixels.reshape(-1, 3), axis=0)) > 200  # pictures, not just text
