"""Which sandbox a service gets: bubblewrap unless opted out, never a silent fallback."""

from __future__ import annotations

from pathlib import Path

import pytest

from lossgym.cli import checked_runner as _checked_runner
from lossgym.config import Settings
from lossgym.sandbox import local_runner
from lossgym.sandbox.runner import make_runner
from tests.sandbox.runner_fixtures import bwrap_problem


def _settings(tmp_path: Path, **values: object) -> Settings:
    return Settings(database=tmp_path / "db.sqlite", runs_dir=tmp_path / "runs", **values)


def test_the_default_is_bubblewrap(tmp_path: Path) -> None:
    if problem := bwrap_problem():
        pytest.skip(problem)
    runner = make_runner(_settings(tmp_path))
    assert (runner.name, runner.isolated) == ("bwrap", True)


def test_without_bubblewrap_the_default_refuses_with_the_choices(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(local_runner, "bwrap_problem", lambda: "bubblewrap is not installed")
    with pytest.raises(RuntimeError) as error:
        make_runner(_settings(tmp_path))
    text = str(error.value)
    assert "bubblewrap is not installed" in text
    assert "LOSSGYM_RUNNER=docker" in text and "LOSSGYM_ISOLATION=none" in text


def test_running_unisolated_is_an_opt_in_that_warns(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    runner = _checked_runner(_settings(tmp_path, isolation="none"))
    assert (runner.name, runner.isolated) == ("local", False)
    err = capsys.readouterr().err
    assert "WARNING: agent code runs WITHOUT a sandbox" in err and "unisolated" in err
