"""The runners under test, each skipped with a reason where this machine lacks it."""

from __future__ import annotations

import os

import pytest

from lossgym.sandbox.runner import Runner, python_runtime

DOCKER_IMAGE = os.environ.get("LOSSGYM_TEST_DOCKER_IMAGE", "lossgym-base:bookworm")
RUNNER_KINDS = ["local", "bwrap", "docker"]
ISOLATING_KINDS = ["bwrap", "docker"]


def bwrap_problem() -> str | None:
    from lossgym.sandbox.local_runner import bwrap_problem as problem

    found = problem()
    return f"{found} (.ci/provision-docker installs it)" if found else None


def docker_problem() -> str | None:
    from lossgym.sandbox.docker_runner import DockerUnavailable, docker_client

    try:
        client = docker_client()
    except DockerUnavailable as error:
        return f"{error} (.ci/provision-docker starts one)"
    try:
        client.images.get(DOCKER_IMAGE)
    except Exception:
        return f"image {DOCKER_IMAGE} is missing (.ci/provision-docker builds it)"
    return None


def make_test_runner(kind: str, **docker_options: object) -> Runner:
    """A runner of `kind`, or skip the test with the reason it cannot run here."""
    if kind == "local":
        from lossgym.sandbox.local_runner import LocalRunner

        return LocalRunner(isolation="none")
    if kind == "bwrap":
        if problem := bwrap_problem():
            pytest.skip(problem)
        from lossgym.sandbox.local_runner import LocalRunner

        return LocalRunner(isolation="bwrap")
    if problem := docker_problem():
        pytest.skip(problem)
    from lossgym.sandbox.docker_runner import DockerRunner

    return DockerRunner(
        DOCKER_IMAGE,
        python=__import__("sys").executable,
        runtime=python_runtime(),
        **docker_options,  # type: ignore[arg-type]
    )
