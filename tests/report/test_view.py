"""fentry view: the speedscope export in the real viewer (npm's speedscope),
served from 127.0.0.1, looked at by headless Chromium."""

from __future__ import annotations

import collections
import json
import os
import shutil
import signal
import subprocess
import sys
import urllib.error
import urllib.parse
import urllib.request

import pytest
from helpers import SHOPAPP, env

from .exports import png_pixels, record

pytestmark = pytest.mark.slow     # the viewer in headless chromium

REQUIRED = bool(os.environ.get("FENTRY_REQUIRE_VIEWER"))   # set by make test once installed


def viewer_or_skip() -> str:
    """speedscope's release directory, as fentry view finds it."""
    from fentry.report.view import ViewerMissing, find_viewer
    try:
        return find_viewer()
    except ViewerMissing as e:
        if REQUIRED:
            pytest.fail(str(e))
        pytest.skip(f"{e} (make viewer installs it)")


def chromium_or_skip() -> str:
    exe = shutil.which("chromium") or shutil.which("chromium-browser")
    if exe is None:
        if REQUIRED:
            pytest.fail("chromium is not installed, though scripts/install-viewer said it was")
        pytest.skip("chromium is not installed (scripts/install-viewer installs it, as root)")
    return exe


def chromium(exe: str, tmp_path, url: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [exe, "--headless", "--no-sandbox", "--disable-gpu", "--enable-unsafe-swiftshader",
         "--disable-dev-shm-usage", "--no-first-run", "--hide-scrollbars",
         f"--user-data-dir={tmp_path / 'chromium-profile'}", "--window-size=1280,800",
         "--virtual-time-budget=15000", *args, url],
        capture_output=True, timeout=180)


class Served:
    """``fentry view FILE`` running: its URL, until stop()."""

    def __init__(self, path: str, *args: str, environ: dict | None = None) -> None:
        self.proc = subprocess.Popen([sys.executable, "-m", "fentry", "view", path, *args],
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                     env=environ or env())
        self.url = self.proc.stdout.readline().strip()
        self.base = self.url.split("#", 1)[0].rstrip("/")

    def get(self, path: str) -> bytes:
        with urllib.request.urlopen(self.base + path, timeout=30) as r:
            return r.read()

    def stop(self) -> tuple[int, str]:
        self.proc.send_signal(signal.SIGINT)
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        return self.proc.returncode, self.proc.stderr.read()


@pytest.fixture(scope="module")
def shop_dat(tmp_path_factory):
    d = tmp_path_factory.mktemp("view")
    return record(d, "shop.dat", "-t", "function_graph", "-l", "__main__:*", SHOPAPP)


def test_view_serves_the_viewer_and_the_trace_on_localhost(shop_dat):
    viewer = viewer_or_skip()
    served = Served(shop_dat)
    try:
        assert served.url.startswith("http://127.0.0.1:"), served.url
        fragment = urllib.parse.urlsplit(served.url).fragment
        profile = urllib.parse.parse_qs(fragment)["profileURL"][0]
        assert b"speedscope" in served.get("/")
        with open(os.path.join(viewer, "index.html"), "rb") as f:
            assert served.get("/index.html") == f.read()
        data = json.loads(served.get(profile))
        assert data["$schema"] == "https://www.speedscope.app/file-format-schema.json"
        assert [p["name"].split("-")[0] for p in data["profiles"]] == ["MainThread", "checkout",
                                                                       "checkout"]
        with pytest.raises(urllib.error.HTTPError):
            served.get("/../../../../etc/passwd")
    finally:
        status, err = served.stop()
    assert status == 0, err
    assert "serving" in err and "Ctrl-C" in err


def test_view_without_the_viewer_says_how_to_get_it(shop_dat, tmp_path):
    e = env()
    e["FENTRY_VIEWER"] = str(tmp_path / "nowhere")
    got = subprocess.run([sys.executable, "-m", "fentry", "view", shop_dat], capture_output=True,
                         text=True, env=e, timeout=60)
    assert got.returncode == 2
    assert "viewer files are not installed" in got.stderr
    assert "scripts/install-viewer" in got.stderr and "FENTRY_VIEWER" in got.stderr


def test_the_export_renders_in_the_real_viewer(shop_dat, tmp_path):
    """speedscope (npm) served by fentry view, in headless Debian Chromium:
    the traced functions' names on the rendered page, and a flame chart on
    the screenshot."""
    viewer_or_skip()
    exe = chromium_or_skip()
    blank = chromium(exe, tmp_path, "about:blank", "--dump-dom")
    if blank.returncode != 0:
        pytest.skip("chromium cannot run here: "
                    + blank.stderr.decode(errors="replace").strip().splitlines()[-1:][0])
    served = Served(shop_dat)
    try:
        # The sandwich view lists the active profile's (the main thread's) functions as text.
        dom = chromium(exe, tmp_path, served.url + "&view=sandwich", "--dump-dom")
        page = dom.stdout.decode(errors="replace")
        assert dom.returncode == 0, dom.stderr[-2000:]
        for name in ("main", "Cart.add", "Cart.lines", "Inventory.take", "ship_all", "cents"):
            assert f">{name}<" in page, name
        assert "MainThread-" in page
        # The time-ordered flame chart, drawn: a picture with colored frames on it.
        shot = tmp_path / "speedscope.png"
        got = chromium(exe, tmp_path, served.url, f"--screenshot={shot}")
        assert got.returncode == 0 and shot.exists(), got.stderr[-2000:]
        width, height, rows = png_pixels(shot.read_bytes())
        assert (width, height) == (1280, 800)
        pixels = [r[i:i + 3] for r in rows[::2] for i in range(0, len(r), 6)]
        colors = collections.Counter(pixels)
        colorful = sum(1 for p in pixels if max(p) - min(p) > 25) / len(pixels)
        assert len(colors) > 50 and colorful > 0.01, (len(colors), colorful)
    finally:
        status, err = served.stop()
    assert status == 0, err
