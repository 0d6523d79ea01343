"""`DockerRunner`: each command in its own container, through the Docker SDK.

The container has no network, a read-only root file system, an unprivileged
user, no capabilities, and limits on memory, processes and /dev/shm. It sees
the spec's mounts (at the same paths as on the host) and, when configured to
borrow the host's Python (`docker_host_python`, for CPU tests on a bare
image), the virtual environment it runs from. GPUs are passed by explicit id.
Output is streamed into the run's log while the container runs.
"""

from __future__ import annotations

import contextlib
import os
import socket
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lossgym.sandbox.runner import (
    Mount,
    RunResult,
    RunSpec,
    check_mounts,
    oom_line,
    parse_user,
    prepare_writable,
    read_pid_file,
    substitute_python,
    write_pid_file,
)
from lossgym.sandbox.runner import python_runtime as host_python_runtime

if TYPE_CHECKING:
    import docker

    from lossgym.config import Settings

LABEL = "lossgym.run"  # every container we start carries it, valued with the run's directory
STOP_GRACE_S = 5


class DockerUnavailable(RuntimeError):
    """No Docker engine answers, or the SDK is missing."""


def docker_client() -> docker.DockerClient:
    try:
        import docker
    except ImportError as error:
        raise DockerUnavailable("the Docker runner needs the SDK: pip install docker") from error
    try:
        client = docker.from_env(timeout=120)
        client.ping()
    except Exception as error:  # the SDK raises several types for "no engine"
        raise DockerUnavailable(f"no Docker engine answers: {error}") from error
    return client


class DockerRunner:
    name = "docker"
    isolated = True

    def __init__(
        self,
        image: str,
        *,
        python: str = "python",
        runtime: list[Mount] | None = None,
        user: str = "65534:65534",
        memory: str = "32g",
        shm_size: str = "8g",
        pids_limit: int = 4096,
        path_map: dict[str, str] | None = None,
        client: docker.DockerClient | None = None,
        hidden: list[Path] | None = None,
    ) -> None:
        self.client = client or docker_client()
        self.image, self.python, self.runtime = image, python, runtime or []
        # A worker that is not root cannot hand directories to another user, so
        # its containers run as itself (still unprivileged, still isolated).
        self.user = user if os.geteuid() == 0 else f"{os.geteuid()}:{os.getegid()}"
        self.memory, self.shm_size, self.pids_limit = memory, shm_size, pids_limit
        self.path_map, self.hidden = path_map or {}, hidden or []

    def describe(self) -> str:
        return f"docker (image {self.image}; limits: the stage's, else memory {self.memory})"

    @classmethod
    def from_settings(cls, settings: Settings, hidden: list[Path] | None = None) -> DockerRunner:
        host = settings.docker_host_python
        client = docker_client()
        try:
            client.images.get(settings.docker_image)
        except Exception as error:
            raise DockerUnavailable(
                f"image {settings.docker_image!r} is not on this Docker host "
                f"(build it: docker build -t {settings.docker_image} .): {error}"
            ) from error
        return cls(
            settings.docker_image,
            python=sys.executable if host else settings.docker_python,
            runtime=host_python_runtime() if host else [],
            user=settings.sandbox_user,
            memory=settings.docker_memory,
            shm_size=settings.docker_shm,
            pids_limit=settings.docker_pids,
            path_map=parse_path_map(settings.docker_path_map) or detect_path_map(client),
            client=client,
            hidden=hidden,
        )

    def run(self, spec: RunSpec, cancel: threading.Event | None = None) -> RunResult:
        check_mounts(spec, self.hidden)
        spec.log_path.parent.mkdir(parents=True, exist_ok=True)
        prepare_writable(spec, parse_user(self.user))
        start = time.monotonic()
        container = self.client.containers.create(**self.container_args(spec))
        try:
            write_pid_file(spec, "docker", container.name)
            container.start()
            copier = threading.Thread(target=_copy_logs, args=(container, spec.log_path))
            copier.start()
            exit_code, timed_out, cancelled = self._wait(container, spec, cancel, start)
            copier.join(timeout=30)
            if exit_code is not None and _oom_killed(container):
                with open(spec.log_path, "a") as log:
                    limit = spec.limits.memory_text() if spec.limits.memory_bytes else self.memory
                    log.write(oom_line(limit))
        finally:
            with contextlib.suppress(Exception):
                container.remove(force=True)
        return RunResult(exit_code, timed_out, cancelled, time.monotonic() - start)

    def _wait(
        self, container: Any, spec: RunSpec, cancel: threading.Event | None, start: float
    ) -> tuple[int | None, bool, bool]:
        """Block until the container exits, or stop it at the time limit or on cancel."""
        outcome: dict[str, int] = {}
        waiter = threading.Thread(
            target=lambda: outcome.update(code=container.wait()["StatusCode"]), daemon=True
        )
        waiter.start()
        while waiter.is_alive():
            waiter.join(timeout=0.2)
            timed_out = time.monotonic() - start > spec.timeout_s
            cancelled = not timed_out and cancel is not None and cancel.is_set()
            if waiter.is_alive() and (timed_out or cancelled):
                with contextlib.suppress(Exception):
                    container.stop(timeout=STOP_GRACE_S)  # SIGTERM, then SIGKILL
                waiter.join(timeout=STOP_GRACE_S * 2)
                return None, timed_out, cancelled
        return outcome.get("code"), False, False

    def container_args(self, spec: RunSpec) -> dict[str, Any]:
        """Everything `containers.create` gets: the sandbox, in one place."""
        from docker.types import DeviceRequest
        from docker.types import Mount as DockerMount

        argv = substitute_python(spec.argv, self.python)
        mounts = [
            DockerMount(str(m.path), self.host_path(m.path), type="bind", read_only=not m.writable)
            for m in self.runtime + spec.mounts
        ]
        gpus = [DeviceRequest(device_ids=list(spec.gpus), capabilities=[["gpu"]])]
        return dict(
            image=self.image,
            command=argv,
            name=f"lossgym-{uuid.uuid4().hex[:12]}",
            working_dir=str(spec.cwd),
            environment=spec.env,
            user=self.user,
            network_mode="none",
            # torchrun's rendezvous resolves the host name; with no network
            # Docker does not list it in /etc/hosts unless asked to.
            hostname="sandbox",
            extra_hosts={"sandbox": "127.0.0.1"},
            read_only=True,
            mounts=mounts,
            tmpfs={"/tmp": "rw,size=1g,mode=1777"},
            shm_size=self.shm_size,
            mem_limit=spec.limits.memory_bytes or self.memory,
            memswap_limit=spec.limits.memory_bytes or self.memory,
            pids_limit=spec.limits.pids or self.pids_limit,
            nano_cpus=int(spec.limits.cpus * 1e9) if spec.limits.cpus else None,
            cap_drop=["ALL"],
            security_opt=["no-new-privileges"],
            device_requests=gpus if spec.gpus else [],
            labels={LABEL: str(spec.cwd), "lossgym.host": socket.gethostname()},
        )

    def host_path(self, path: Path) -> str:
        """The Docker host's name for `path` (differs when this worker runs in a container)."""
        text = str(path)
        for inside, outside in sorted(self.path_map.items(), key=lambda kv: -len(kv[0])):
            if text == inside or text.startswith(inside.rstrip("/") + "/"):
                return outside.rstrip("/") + text[len(inside.rstrip("/")) :]
        return text

    def kill_stale(self, pid_file: Path) -> None:
        """Remove the container a dead worker's run left behind."""
        record = read_pid_file(pid_file)
        if record is not None and record[0] == "docker":
            with contextlib.suppress(Exception):
                self.client.containers.get(record[1]).remove(force=True)


def parse_path_map(text: str) -> dict[str, str]:
    """'inside=outside,inside2=outside2' → {inside: outside}; a clear error otherwise."""
    mapping = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        inside, sep, outside = item.partition("=")
        if not sep or not inside.startswith("/") or not outside.startswith("/"):
            raise ValueError(f"bad LOSSGYM_DOCKER_PATH_MAP entry {item!r}: want /inside=/outside")
        mapping[inside] = outside
    return mapping


def detect_path_map(client: Any, marker: Path = Path("/.dockerenv")) -> dict[str, str]:
    """When this worker itself runs in a container, map its mounts to the host's paths.

    The engine resolves bind sources on the Docker host, so a run directory on
    a named volume (/var/lib/lossgym/runs here) must be named by the volume's
    host path. The worker reads its own container's mounts to learn them.
    """
    if not marker.exists():
        return {}
    host = socket.gethostname()
    try:  # the host name is the container id, unless compose set a fixed one
        candidates = [client.containers.get(host)]
    except Exception:
        try:
            candidates = [
                c for c in client.containers.list() if c.attrs["Config"]["Hostname"] == host
            ]
        except Exception:
            return {}
    if not candidates:
        return {}
    mounts = candidates[0].attrs.get("Mounts", [])
    return {m["Destination"]: m["Source"] for m in mounts if m.get("Source")}


def _copy_logs(container: Any, log_path: Path) -> None:
    """Stream the container's stdout and stderr into the run's log as they come."""
    with open(log_path, "ab") as log, contextlib.suppress(Exception):
        for chunk in container.logs(stream=True, follow=True, stdout=True, stderr=True):
            log.write(chunk)
            log.flush()


def _oom_killed(container: Any) -> bool:
    with contextlib.suppress(Exception):
        container.reload()
        return bool(container.attrs["State"].get("OOMKilled"))
    return False
