"""What only the Docker runner promises: resource limits, GPU requests, path mapping."""

from __future__ import annotations

from pathlib import Path

import pytest

from lossgym.sandbox.docker_runner import DockerRunner, detect_path_map, parse_path_map
from lossgym.sandbox.runner import PYTHON, Limits, Mount, RunSpec, base_env
from tests.sandbox.runner_fixtures import make_test_runner


def _spec(tmp_path: Path, code: str, **kw: object) -> RunSpec:
    work = tmp_path / "run"
    work.mkdir(exist_ok=True)
    return RunSpec(
        [PYTHON, "-c", code], work, tmp_path / "run.log", 60.0, base_env({}),
        mounts=[Mount(work, writable=True)], **kw,  # type: ignore[arg-type]
    )  # fmt: skip


def test_memory_limit_kills_and_says_so(tmp_path: Path) -> None:
    runner = make_test_runner("docker", memory="128m")
    code = "blocks = []\nwhile True:\n    blocks.append(bytearray(16 * 2**20))"
    result = runner.run(_spec(tmp_path, code))
    assert result.exit_code == 137
    assert "out of memory (limit 128m)" in (tmp_path / "run.log").read_text()


class _NoClient:
    """container_args() needs no engine: this stands where the SDK client would be."""


def test_a_stages_limits_win_over_the_settings_defaults(tmp_path: Path) -> None:
    """The shared runner suite shows that limits hold; this, which of them apply."""
    runner = DockerRunner("img", client=_NoClient(), memory="32g", pids_limit=4096)  # type: ignore[arg-type]
    defaults = runner.container_args(_spec(tmp_path, "pass"))
    assert (defaults["mem_limit"], defaults["pids_limit"], defaults["nano_cpus"]) == (
        "32g",
        4096,
        None,
    )
    limits = Limits(memory_bytes=6 * 2**30, cpus=1.5, pids=512)
    staged = runner.container_args(_spec(tmp_path, "pass", limits=limits))
    assert staged["mem_limit"] == staged["memswap_limit"] == 6 * 2**30
    assert (staged["pids_limit"], staged["nano_cpus"]) == (512, 1_500_000_000)


def test_gpus_become_an_explicit_device_request(tmp_path: Path) -> None:
    runner = DockerRunner("img", client=_NoClient())  # type: ignore[arg-type]
    args = runner.container_args(_spec(tmp_path, "pass", gpus=["1", "3"]))
    [request] = args["device_requests"]
    assert request["DeviceIDs"] == ["1", "3"] and request["Capabilities"] == [["gpu"]]
    assert args["network_mode"] == "none" and args["read_only"] and args["user"] == "65534:65534"
    assert args["cap_drop"] == ["ALL"] and args["command"][0] == "python"
    assert runner.container_args(_spec(tmp_path, "pass"))["device_requests"] == []


def test_path_map_translates_bind_sources(tmp_path: Path) -> None:
    runner = DockerRunner(
        "img",
        client=_NoClient(),  # type: ignore[arg-type]
        path_map=parse_path_map("/srv/runs=/var/lib/docker/volumes/runs/_data"),
    )
    assert (
        runner.host_path(Path("/srv/runs/job-1/out"))
        == "/var/lib/docker/volumes/runs/_data/job-1/out"
    )
    assert runner.host_path(Path("/srv/runsx")) == "/srv/runsx"
    with pytest.raises(ValueError, match="want /inside=/outside"):
        parse_path_map("runs:/x")


class _Me:
    attrs = {
        "Mounts": [
            {"Destination": "/var/lib/lossgym/runs", "Source": "/var/lib/docker/volumes/r/_data"},
            {"Destination": "/var/run/docker.sock", "Source": "/var/run/docker.sock"},
        ]
    }


class _SelfClient:
    class containers:  # noqa: N801 - the SDK's attribute name
        @staticmethod
        def get(name: str) -> _Me:
            return _Me()


def test_a_containerized_worker_learns_its_volumes_host_paths(tmp_path: Path) -> None:
    marker = tmp_path / ".dockerenv"
    assert detect_path_map(_SelfClient(), marker) == {}  # not in a container: paths are the host's
    marker.touch()
    mapping = detect_path_map(_SelfClient(), marker)
    assert mapping["/var/lib/lossgym/runs"] == "/var/lib/docker/volumes/r/_data"
