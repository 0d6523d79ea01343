"""bench/gpu_check.py must not rot between GPU loans: its --dry-run takes the same code
paths (launcher, compile, evaluator, determinism, projections) on CPU with a tiny model."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO

pytestmark = pytest.mark.slow  # six short trainings and three evaluations


def test_dry_run_exercises_every_phase(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "bench/gpu_check.py", "--dry-run", "--out", str(tmp_path)],
        cwd=REPO, capture_output=True, text=True, timeout=900,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    report = json.loads((tmp_path / "gpu_check.json").read_text())
    runs = {r["name"]: r for r in report["runs"]}
    assert set(runs) == {
        "124m bf16 compile", "124m bf16 eager", "124m fp32 eager", "determinism a",
        "determinism b",
    }  # fmt: skip
    assert all(r["ok"] and r["tok_s"] > 0 for r in runs.values())
    assert runs["124m bf16 compile"]["first_iter_ms"] > runs["124m bf16 compile"]["ms_iter"]
    assert 5 < runs["124m bf16 compile"]["val_loss"] < 12  # the trusted evaluator ran
    assert report["determinism"]["difference"] == 0.0
    assert set(report["projections"]) == {"gpt2-124m", "gpt2-345m", "gpt2-1.5b"}
    assert "compile_gain" in report and "bf16_gain" in report
    assert "124m bf16 compile" in done.stdout  # the table
