"""The deployment files: docker-compose.yml and the Dockerfile it builds."""

from __future__ import annotations

import os
import shutil
import subprocess

import pytest
import yaml
from typer.testing import CliRunner

from lossgym.cli import app
from tests.conftest import REPO

COMPOSE = REPO / "docker-compose.yml"


def _compose() -> dict:
    return yaml.safe_load(COMPOSE.read_text())


def test_api_and_worker_share_one_image_and_named_volumes() -> None:
    services = _compose()["services"]
    assert services["api"]["image"] == services["worker"]["image"] == "lossgym-trainer"
    assert set(_compose()["volumes"]) == {"db", "data", "runs"}
    for name in ("api", "worker"):
        mounted = {v.split(":")[0] for v in services[name]["volumes"]}
        assert {"db", "data", "runs"} <= mounted, name
        assert services[name]["healthcheck"]["test"], name


def test_worker_reserves_nvidia_gpus_and_uses_the_docker_runner() -> None:
    worker = _compose()["services"]["worker"]
    [device] = worker["deploy"]["resources"]["reservations"]["devices"]
    assert device["driver"] == "nvidia" and device["capabilities"] == ["gpu"]
    assert worker["command"][:4] == ["lossgym", "worker", "--runner", "docker"]
    assert "/var/run/docker.sock:/var/run/docker.sock" in worker["volumes"]


@pytest.mark.parametrize("service", ["api", "worker"])
def test_compose_commands_exist_in_the_cli(service: str) -> None:
    command = _compose()["services"][service]["command"]
    assert command[0] == "lossgym"
    subcommand = [part for part in command[1:] if not part.startswith("-")][:1]
    help_text = CliRunner().invoke(app, [*subcommand, "--help"], terminal_width=200).output
    for flag in (part for part in command if part.startswith("--")):
        assert flag in help_text, (service, flag)


def test_dockerfile_takes_the_base_image_as_a_build_argument() -> None:
    lines = [ln for ln in (REPO / "Dockerfile").read_text().splitlines() if ln.strip()]
    code = [ln for ln in lines if not ln.startswith("#")]
    assert code[0].startswith("ARG BASE_IMAGE=") and code[1] == "FROM ${BASE_IMAGE}"
    assert any(ln.startswith("USER ") and "root" not in ln for ln in code)
    assert any(ln.startswith("HEALTHCHECK") for ln in code)


def test_docker_compose_config_validates() -> None:
    if shutil.which("docker-compose"):
        argv = ["docker-compose", "-f", str(COMPOSE), "config", "-q"]
    elif (
        shutil.which("docker")
        and subprocess.run(["docker", "compose", "version"], capture_output=True).returncode == 0
    ):
        argv = ["docker", "compose", "-f", str(COMPOSE), "config", "-q"]
    else:
        pytest.skip("neither docker-compose nor the compose plugin (.ci/provision-docker)")
    env = dict(os.environ, LOSSGYM_OPERATOR_KEY="ci-key")
    result = subprocess.run(argv, capture_output=True, text=True, env=env, cwd=REPO)
    assert result.returncode == 0, result.stderr
    missing = subprocess.run(argv, capture_output=True, text=True, cwd=REPO,
                             env={k: v for k, v in env.items() if k != "LOSSGYM_OPERATOR_KEY"})  # fmt: skip
    assert missing.returncode != 0 and "LOSSGYM_OPERATOR_KEY" in missing.stderr
