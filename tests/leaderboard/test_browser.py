"""The pages in a real browser: headless Chromium (Debian package) against a live server.

Loads `/`, a session page and a comparison, checks the rendered DOM (the table,
and that each plot drew non-empty train, monitor and reference polylines; the
comparison one per session and the baseline's), that the comparison's curves
reach the screen in their own colours, and saves screenshots under
`test-artifacts/` at the repository root.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from lossgym.env.service import EpisodeService
from lossgym.store import queries
from lossgym.store.db import Database
from tests.conftest import REPO
from tests.leaderboard.page_helpers import EVIL, Page, fill
from tests.leaderboard.png_pixels import colour_counts, hex_rgb

CHROMIUM = Path("/usr/bin/chromium")
ARTIFACTS = REPO / "test-artifacts"
FLAGS = (
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--no-first-run",
    "--disable-dev-shm-usage", "--hide-scrollbars",
)  # fmt: skip

pytestmark = pytest.mark.skipif(
    not CHROMIUM.exists(),
    reason="headless Chromium is not installed (apt-get install -y chromium)",
)


def chromium(profile: Path, *args: str) -> str:
    """Run headless Chromium with its own profile directory; its stdout."""
    argv = [str(CHROMIUM), *FLAGS, f"--user-data-dir={profile}", *args]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


def dump_dom(profile: Path, url: str) -> str:
    return chromium(profile, "--virtual-time-budget=3000", "--dump-dom", url)


def screenshot(profile: Path, url: str, name: str, height: int = 1600) -> Path:
    ARTIFACTS.mkdir(exist_ok=True)
    path = ARTIFACTS / name
    path.unlink(missing_ok=True)
    chromium(profile, f"--screenshot={path}", f"--window-size=1280,{height}", url)
    assert path.is_file() and path.stat().st_size > 10_000, path
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    return path


def test_pages_render_in_chromium(
    server: str, service: EpisodeService, db: Database, tmp_path: Path
) -> None:
    filled = fill(service, db)
    profile = tmp_path / "chromium-profile"

    board = dump_dom(profile, f"{server}/")
    rows = Page(board).rows
    assert [r["sid"] for r in rows][:2] == [filled.good, filled.smoothing]
    assert sum("baseline" in r["class"].split() for r in rows) == 4
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in board and EVIL not in board
    assert "Noise rule." in board and "CSV export" in board
    screenshot(profile, f"{server}/", "leaderboard.png", height=1000)
    screenshot(profile, f"{server}/?sort=value&dir=desc&agent=a", "leaderboard-sorted.png", 800)

    page = dump_dom(profile, f"{server}/board/{filled.good}")
    plots = Page(page).svgs
    assert len(plots) == 2
    for polylines in plots:
        series = {p["class"].split()[-1]: p["points"] for p in polylines}
        assert set(series) == {"train", "monitor", "ref-train", "ref-monitor"}
        for points in series.values():
            assert len(re.findall(r"[\d.]+,[\d.]+", points)) == 3
    assert '<pre class="diff">' in page and "Transcript (" in page
    screenshot(profile, f"{server}/board/{filled.good}", "session.png", height=2400)
    screenshot(profile, f"{server}/board/{filled.running}", "session-running.png", 700)


RUN_COLOURS = ("#1f6feb", "#d1242f", "#1a7f37")  # .run-0, .run-1, .run-2 in base.html
REFERENCE_COLOUR = "#24292f"  # .ref-mean
LEGEND_PIXELS = 150  # a legend line is 24 px long: a drawn curve has many more pixels


def _own_curve(db: Database, sid: str, shift: float) -> None:
    """Give the session's tests a curve of their own, so that no two compared curves overlap."""
    curve = [
        [0, 10.9 - shift, 10.8 - shift],
        [10, 6.3 - shift, 6.4 - shift],
        [20, 5.4 - shift, 5.6 - shift],
    ]
    with db.transaction() as tx:
        for test in queries.tests_of(tx, sid, with_stages=True):
            for stage in test.stages:
                stage.curve = curve


def test_compare_view_renders_in_chromium(
    server: str, service: EpisodeService, db: Database, tmp_path: Path
) -> None:
    filled = fill(service, db)
    _own_curve(db, filled.evil, 0.9)
    _own_curve(db, filled.smoothing, 0.4)
    profile = tmp_path / "chromium-profile"
    url = f"{server}/compare?sessions={filled.good},{filled.evil},{filled.smoothing}"

    page = dump_dom(profile, url)
    assert [r["sid"] for r in Page(page).rows] == []  # not the board's table
    assert page.count('<tr class="compared') == 3 and EVIL not in page
    plots = Page(page).svgs
    assert len(plots) == 2
    for polylines in plots:
        series = {p["class"].split()[-1]: p["points"] for p in polylines}
        assert set(series) == {"run-0", "run-1", "run-2", "ref-mean"}
        for points in series.values():
            assert len(re.findall(r"[\d.]+,[\d.]+", points)) == 3

    shot = screenshot(profile, url, "compare.png", height=1300)
    counts = colour_counts(shot)
    for colour in (*RUN_COLOURS, REFERENCE_COLOUR):
        assert counts[hex_rgb(colour)] > LEGEND_PIXELS, (colour, counts[hex_rgb(colour)])


@pytest.fixture(autouse=True)
def _no_leftover_profiles(tmp_path: Path) -> Iterator[None]:
    yield
    shutil.rmtree(tmp_path / "chromium-profile", ignore_errors=True)
