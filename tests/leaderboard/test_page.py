"""The HTML leaderboard (`/`) and session pages (`/board/{id}`) over real HTTP (no worker).

Results are written into the database as the worker would; the pages are
parsed with the standard library's HTML parser.
"""

from __future__ import annotations

import html
import re

import pytest

from lossgym.env.service import EpisodeService
from lossgym.leaderboard.ranking import NOISE_RULE
from lossgym.store.db import Database
from tests.conftest import OPERATOR_KEY
from tests.leaderboard.page_helpers import (
    EVIL,
    HIDDEN,
    MARKER,
    RUNNING_SECRET,
    Filled,
    Page,
    fill,
    get,
)

OPERATOR = {"Authorization": f"Bearer {OPERATOR_KEY}"}


@pytest.fixture
def filled(service: EpisodeService, db: Database) -> Filled:
    return fill(service, db)


def _order(base: str, query: str = "") -> list[str]:
    return [r["sid"] for r in Page(get(base, "/" + query)).rows]


def test_board_rows_in_rank_order_with_baselines_marked(server: str, filled: Filled) -> None:
    text = get(server, "/")
    rows = Page(text).rows
    ranked = [filled.good, filled.smoothing, filled.ce[2], filled.ce[0], filled.ce[1], filled.evil]
    assert [r["sid"] for r in rows] == [*ranked, filled.running]
    assert [r["cells"][0] for r in rows] == ["1", "2", "3", "4", "5", "6", ""]
    baseline_rows = {r["sid"] for r in rows if "baseline" in r["class"].split()}
    assert baseline_rows == {filled.smoothing, *filled.ce}
    good = rows[0]["cells"]
    assert good[1].startswith("alice") and good[2] == "4.8000" and good[3] == "-0.2000"
    assert good[4] == "outside noise" and good[5] == "-0.2000" and good[7] == "#2"
    assert "auto" in rows[5]["cells"][7] and "auto" not in good[7]
    assert "5.0000 ± 0.0200 (n=3)" in text  # the cross_entropy reference, mean ± std
    assert rows[3]["cells"][4] == "within noise"
    assert NOISE_RULE in html.unescape(text)
    assert "/api/leaderboard.csv?task=llm-pretrain-loss&amp;profile=tiny-cpu" in text
    assert f'href="/board/{filled.good}"' in text
    assert HIDDEN in text and "32.0000" in text  # hidden metrics are columns here


def test_running_row_shows_no_metrics_without_the_operator_key(server: str, filled: Filled) -> None:
    public = get(server, "/")
    assert "4.1234" not in public and "99.0000" not in public
    running = next(r for r in Page(public).rows if r["sid"] == filled.running)
    assert "running" in running["cells"][1] and running["cells"][2] == "\u2014"
    operator = get(server, "/", OPERATOR)  # unscored until it ends, for the operator too
    assert filled.running in [r["sid"] for r in Page(operator).rows]
    assert "Operator view" in operator and "Operator view" not in public


def test_sorting_and_agent_filter(server: str, filled: Filled) -> None:
    by_value_desc = _order(server, "?sort=value&dir=desc")
    assert by_value_desc[:3] == [filled.evil, filled.ce[1], filled.ce[0]]
    assert by_value_desc[-1] == filled.running  # no value: last either way
    assert _order(server, "?sort=value&dir=asc")[0] == filled.good
    assert _order(server, f"?sort={HIDDEN}&dir=desc")[:2] == [filled.good, filled.evil]
    assert _order(server, "?sort=agent")[0] == filled.evil  # "<script>…" sorts first
    assert _order(server, "?agent=CROSS") == [filled.ce[2], filled.ce[0], filled.ce[1]]
    assert _order(server, "?agent=alice&sort=value&dir=desc") == [filled.good]
    assert _order(server, "?agent=nobody") == []
    text = get(server, "/?sort=value&dir=asc&agent=ali")
    assert 'href="/?sort=value&amp;dir=desc&amp;agent=ali"' in text  # the header flips
    assert 'name="agent" value="ali"' in text
    assert _order(server, "?sort=no-such-column") == _order(server)  # ignored


def test_agent_text_is_escaped(server: str, filled: Filled) -> None:
    for path in ("/", f"/board/{filled.evil}", f"/board/{filled.good}"):
        text = get(server, path)
        assert "<script>" not in text and "<b>not bold</b>" not in text, path
    assert html.escape(EVIL) in get(server, "/")
    assert "&lt;b&gt;not bold&lt;/b&gt;" in get(server, f"/board/{filled.good}")


def test_session_page_has_plots_diffs_and_transcript(server: str, filled: Filled) -> None:
    text = get(server, f"/board/{filled.good}")
    page = Page(text)
    assert len(page.svgs) == 2 == len(re.findall(r'<section class="test"', text))
    for polylines in page.svgs:
        classes = {c for p in polylines for c in p["class"].split()}
        assert {"train", "monitor", "reference", "ref-train", "ref-monitor"} <= classes
        for line in polylines:
            points = line["points"].split()
            assert len(points) == 3 and all(re.fullmatch(r"[\d.]+,[\d.]+", p) for p in points)
    assert text.count('<pre class="diff">') == 2
    assert re.search(rf'<span class="add">\+ +# {MARKER}', text)
    assert '<span class="del">-' in text and "@@" in text
    for tool in ("edit", "test", "submit"):
        assert f'<code class="tool">{tool}</code>' in text
    assert "OK: Replaced" in text or "Replaced" in text  # the edit's returned text
    assert "#2 (submitted)" in text and HIDDEN in text and "4.8000" in text
    auto = get(server, f"/board/{filled.evil}")
    assert "(auto-submitted)" in auto and len(Page(auto).svgs) == 1


def test_running_session_page_is_only_a_summary(server: str, filled: Filled) -> None:
    for headers in ({}, {"Authorization": "Bearer wrong"}):
        text = get(server, f"/board/{filled.running}", headers)
        assert "sneaky" in text and "shown once it ends" in text
        for secret in (RUNNING_SECRET, "compute_loss", "4.1234", HIDDEN, "<svg", "Replaced"):
            assert secret not in text, secret
    full = get(server, f"/board/{filled.running}", OPERATOR)
    assert RUNNING_SECRET in full and "<svg" in full and "4.1234" in full


def test_unknown_session_is_an_html_404(server: str) -> None:
    text = get(server, "/board/no-such-session", status=404)
    assert "Not found" in text and "no-such-session" in text


def test_an_unisolated_session_carries_a_badge(
    server: str, service: EpisodeService, db: Database
) -> None:
    from tests.leaderboard.lbtest_helpers import TASK, end, finish_test, primary_key

    trusted = fill(service, db).good
    sid = service.create_session(TASK, "unsandboxed", seed=0)["session_id"]
    assert service.test(sid, wait=False).ok
    finish_test(service, db, sid, 1, {primary_key(service): 4.7}, sandbox="local")
    end(service, db, sid)
    rows = {r["sid"]: r for r in Page(get(server, "/")).rows}
    assert "unisolated" in rows[sid]["cells"][1] and "unisolated" not in rows[trusted]["cells"][1]
