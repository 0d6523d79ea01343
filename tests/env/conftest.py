"""Fixtures for the env tests."""

from __future__ import annotations

import pytest
from envtest_helpers import SCRIPT, SYNTHETIC_REGIONS, synthetic_script

from lossgym.env.workspace import Workspace


@pytest.fixture
def ws() -> Workspace:
    files = {SCRIPT: synthetic_script(), "nanoGPT/README.txt": "read me\nplease\n"}
    return Workspace(files, {SCRIPT: SYNTHETIC_REGIONS})
