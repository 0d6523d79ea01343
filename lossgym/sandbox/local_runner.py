"""`LocalRunner`: a subprocess on this machine, in its own process group.

A timeout or cancel kills the whole group (torchrun and every rank), not just
the parent. With `isolation="bwrap"` the command runs inside bubblewrap: new
network, PID, IPC and user namespaces, the system directories and the Python
runtime read-only, the spec's mounts and nothing else, so the validation shards
and the service's files do not exist for it.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from lossgym.sandbox.runner import (
    PYTHON,
    RunResult,
    RunSpec,
    prepare_writable,
    python_runtime,
    read_pid_file,
    write_pid_file,
)

KILL_GRACE_S = 5.0
SYSTEM_DIRS = ("/usr", "/bin", "/sbin", "/lib", "/lib64", "/etc/alternatives")
SYSTEM_FILES = ("/etc/ld.so.cache", "/etc/nsswitch.conf", "/etc/localtime")
HOSTNAME = "sandbox"
# torchrun's rendezvous resolves the host name, so the sandbox's must resolve.
HOSTS = f"127.0.0.1 localhost {HOSTNAME}\n::1 localhost ip6-localhost\n"


class LocalRunner:
    name = "local"

    def __init__(self, isolation: str = "none", user: str = "65534:65534") -> None:
        if isolation not in ("none", "bwrap"):
            raise ValueError(f"unknown isolation {isolation!r}: use 'none' or 'bwrap'")
        if isolation == "bwrap" and shutil.which("bwrap") is None:
            raise RuntimeError("isolation 'bwrap' needs bubblewrap: apt-get install bubblewrap")
        self.isolation = isolation
        self.user = user
        if isolation == "bwrap":
            self.name = "local+bwrap"

    def run(self, spec: RunSpec, cancel: threading.Event | None = None) -> RunResult:
        spec.log_path.parent.mkdir(parents=True, exist_ok=True)
        prepare_writable(spec)
        start = time.monotonic()
        with open(spec.log_path, "ab") as log:
            proc = subprocess.Popen(
                self.command(spec),
                cwd=spec.cwd,
                env=self.environment(spec),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
            write_pid_file(spec, socket.gethostname(), proc.pid)
            timed_out = cancelled = False
            while True:
                try:
                    proc.wait(timeout=0.2)
                    break
                except subprocess.TimeoutExpired:
                    pass
                timed_out = time.monotonic() - start > spec.timeout_s
                cancelled = not timed_out and cancel is not None and cancel.is_set()
                if timed_out or cancelled:
                    _kill_group(proc)
                    break
            _kill_leftovers(proc.pid)
        exit_code = None if (timed_out or cancelled) else proc.returncode
        return RunResult(exit_code, timed_out, cancelled, time.monotonic() - start)

    def command(self, spec: RunSpec) -> list[str]:
        argv = [sys.executable if spec.argv[0] == PYTHON else spec.argv[0], *spec.argv[1:]]
        return self._bwrap(spec) + argv if self.isolation == "bwrap" else argv

    def environment(self, spec: RunSpec) -> dict[str, str]:
        env = dict(spec.env)
        if spec.gpus:
            env["CUDA_VISIBLE_DEVICES"] = ",".join(spec.gpus)
        return env

    def _bwrap(self, spec: RunSpec) -> list[str]:
        uid, gid = self.user.split(":")
        args = ["bwrap", "--die-with-parent", "--unshare-all", "--unshare-user"]
        args += ["--uid", uid, "--gid", gid, "--hostname", HOSTNAME]
        args += ["--ro-bind", str(_hosts_file()), "/etc/hosts"]
        for path in SYSTEM_DIRS + SYSTEM_FILES:
            if os.path.exists(path):
                args += ["--ro-bind", path, path]
        args += ["--proc", "/proc", "--dev", "/dev", "--tmpfs", "/tmp"]
        if spec.gpus:  # the NVIDIA device nodes, for CUDA
            for node in sorted(Path("/dev").glob("nvidia*")):
                args += ["--dev-bind", str(node), str(node)]
        for mount in python_runtime() + spec.mounts:
            args += ["--bind" if mount.writable else "--ro-bind", str(mount.path), str(mount.path)]
        return [*args, "--chdir", str(spec.cwd), "--"]

    def kill_stale(self, pid_file: Path) -> None:
        """Kill every process of the recorded group still working inside the run dir."""
        record = read_pid_file(pid_file)
        if record is None or record[0] != socket.gethostname() or not record[1].isdigit():
            return
        for pid in group_members(int(record[1]), str(pid_file.parent)):
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)


def _hosts_file() -> Path:
    path = Path(tempfile.gettempdir()) / f"lossgym-hosts-{os.getuid()}"
    if not path.is_file() or path.read_text() != HOSTS:
        path.write_text(HOSTS)
    return path


def group_members(pgid: int, run_dir: str) -> list[int]:
    """Processes of group `pgid` whose working directory lies inside `run_dir`.

    Checking the directory as well as the group means a recycled pgid that now
    belongs to some unrelated program is never touched.
    """
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            group = int(stat.rsplit(")", 1)[1].split()[2])
            cwd = os.readlink(entry / "cwd")
        except (OSError, ValueError, IndexError):
            continue
        if group == pgid and (cwd == run_dir or cwd.startswith(run_dir + "/")):
            found.append(int(entry.name))
    return found


def _kill_group(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM the process group, then SIGKILL whatever is left after a grace period."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout=KILL_GRACE_S)
            return
        except subprocess.TimeoutExpired:
            continue


def _kill_leftovers(pgid: int) -> None:
    """Whatever the command left running in its group (a forked child) dies with it."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGKILL)
