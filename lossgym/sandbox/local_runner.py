"""`LocalRunner`: a process tree on this machine, inside bubblewrap unless opted out.

With `isolation="bwrap"` (the default) the command runs inside bubblewrap: new
network, PID, IPC, UTS and user namespaces, the system directories and the
Python runtime read-only, the spec's mounts and nothing else, so the database,
the validation shards and other runs do not exist for it. A root worker also
drops to the sandbox user (65534) before bubblewrap starts, when every path the
run binds is reachable by that user.

Every run gets a cgroup of its own where the machine allows (`cgroups.py`):
the run's `Limits` are enforced there, and the end of a run kills the whole
group, children that left the process group included. Without a cgroup,
bubblewrap's PID namespace still takes the whole tree down with it.
`isolation="none"` runs the command as a plain subprocess: an explicit,
warned opt-in for trusted code only.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import signal
import socket
import stat
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from lossgym.sandbox import cgroups
from lossgym.sandbox.runner import (
    RunResult,
    RunSpec,
    check_mounts,
    oom_line,
    parse_user,
    prepare_writable,
    python_runtime,
    read_pid_file,
    substitute_python,
    write_pid_file,
)

log = logging.getLogger("lossgym.sandbox")
KILL_GRACE_S = 5.0
ENTER = str(Path(__file__).with_name("enter.py"))
SYSTEM_DIRS = ("/usr", "/bin", "/sbin", "/lib", "/lib64", "/etc/alternatives")
SYSTEM_FILES = ("/etc/ld.so.cache", "/etc/nsswitch.conf", "/etc/localtime")
NVIDIA_CONTROL = ("nvidiactl", "nvidia-uvm", "nvidia-uvm-tools", "nvidia-modeset", "nvidia-caps")
HOSTNAME = "sandbox"
# torchrun's rendezvous resolves the host name, so the sandbox's must resolve.
HOSTS = f"127.0.0.1 localhost {HOSTNAME}\n::1 localhost ip6-localhost\n"


def bwrap_problem() -> str | None:
    """Why bubblewrap cannot sandbox here, or None."""
    if sys.platform != "linux":
        return f"bubblewrap needs Linux; this is {sys.platform}"
    if shutil.which("bwrap") is None:
        return "bubblewrap (bwrap) is not installed"
    probe = subprocess.run(
        ["bwrap", "--unshare-all", "--ro-bind", "/", "/", "true"], capture_output=True, text=True
    )
    if probe.returncode != 0:
        return f"bubblewrap cannot create namespaces here: {probe.stderr.strip()}"
    return None


class LocalRunner:
    def __init__(
        self,
        isolation: str = "bwrap",
        user: str = "65534:65534",
        hidden: list[Path] | None = None,
        share_net: bool = False,
        bind_all_gpus: bool = False,
    ) -> None:
        if isolation not in ("none", "bwrap"):
            raise ValueError(f"unknown isolation {isolation!r}: use 'bwrap' or 'none'")
        if isolation == "bwrap" and (problem := bwrap_problem()):
            raise RuntimeError(problem)
        self.user, self.hidden = parse_user(user), hidden or []
        # Only a multi-node Slurm stage shares the node's network (NCCL and the
        # rendezvous need it), and with it the node's name and resolver.
        self.share_net = share_net
        # In a Slurm job the GPU ids are the scheduler's (maybe renumbered from 0),
        # not device-node names: bind every GPU node; the job's cgroup says which work.
        self.bind_all_gpus = bind_all_gpus
        self.isolated = isolation == "bwrap"
        self.name = "bwrap" if self.isolated else "local"
        found = cgroups.detect()
        self.cgroups = found if isinstance(found, cgroups.Cgroups) else None
        self.limits_problem = None if self.cgroups else str(found)
        self._warned: set[Path] = set()

    def describe(self) -> str:
        limits = f"cgroup v{self.cgroups.version}" if self.cgroups else self.limits_problem
        return f"{self.name} (limits: {limits})"

    def run(self, spec: RunSpec, cancel: threading.Event | None = None) -> RunResult:
        check_mounts(spec, self.hidden)
        spec.log_path.parent.mkdir(parents=True, exist_ok=True)
        drop = self._unprivileged_user(spec)
        prepare_writable(spec, drop)
        group = self.cgroups.new_group(spec.limits) if self.cgroups else None
        start = time.monotonic()
        try:
            with open(spec.log_path, "ab") as log_file:
                proc = subprocess.Popen(
                    self.command(spec, group, drop),
                    cwd=spec.cwd,
                    env=self.environment(spec),
                    stdin=subprocess.DEVNULL,
                    stdout=log_file,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
            handle = f"{proc.pid}:{group.name}" if group else str(proc.pid)
            write_pid_file(spec, socket.gethostname(), handle)
            timed_out, cancelled = self._wait(proc, spec, cancel, start, group)
        finally:
            oom = group is not None and group.oom_killed()
            if group is not None:
                group.remove()  # whatever is left in the group dies: setsid children too
        if oom:
            with open(spec.log_path, "a") as log_file:
                log_file.write(oom_line(spec.limits.memory_text()))
        exit_code = None if (timed_out or cancelled) else proc.returncode
        return RunResult(exit_code, timed_out, cancelled, time.monotonic() - start)

    def _wait(
        self,
        proc: subprocess.Popen[bytes],
        spec: RunSpec,
        cancel: threading.Event | None,
        start: float,
        group: cgroups.RunCgroup | None,
    ) -> tuple[bool, bool]:
        """Until the command exits, or kill it all at the time limit or on cancel."""
        while True:
            try:
                proc.wait(timeout=0.2)
                if group is None:  # leftovers of its process group
                    with contextlib.suppress(ProcessLookupError, PermissionError):
                        os.killpg(proc.pid, signal.SIGKILL)
                return False, False
            except subprocess.TimeoutExpired:
                pass
            timed_out = time.monotonic() - start > spec.timeout_s
            cancelled = not timed_out and cancel is not None and cancel.is_set()
            if timed_out or cancelled:
                if group is not None:
                    group.kill()
                _kill_group(proc)
                return timed_out, cancelled

    def command(
        self, spec: RunSpec, group: cgroups.RunCgroup | None, drop: tuple[int, int] | None
    ) -> list[str]:
        argv = substitute_python(spec.argv, sys.executable)
        if self.isolated:
            argv = self._bwrap(spec) + argv
        enter = [sys.executable, "-I", "-S", ENTER]
        for procs in group.procs_files if group else []:
            enter += ["--cgroup", str(procs)]
        if drop is not None:
            enter += ["--user", f"{drop[0]}:{drop[1]}"]
        return [*enter, "--", *argv] if len(enter) > 4 else argv

    def environment(self, spec: RunSpec) -> dict[str, str]:
        env = dict(spec.env)
        if spec.gpus:
            env["CUDA_VISIBLE_DEVICES"] = ",".join(spec.gpus)
        return env

    def _bwrap(self, spec: RunSpec) -> list[str]:
        uid, gid = self.user
        args = ["bwrap", "--die-with-parent", "--unshare-all", "--unshare-user"]
        args += ["--uid", str(uid), "--gid", str(gid)]
        if self.share_net:
            args += ["--share-net"]
            for path in ("/etc/hosts", "/etc/resolv.conf"):
                if os.path.exists(path):
                    args += ["--ro-bind", path, path]
        else:
            args += ["--hostname", HOSTNAME, "--ro-bind", str(_hosts_file()), "/etc/hosts"]
        for path in SYSTEM_DIRS + SYSTEM_FILES:
            if os.path.exists(path):
                args += ["--ro-bind", path, path]
        args += ["--proc", "/proc", "--dev", "/dev", "--tmpfs", "/tmp"]
        gpus = ["all"] if self.bind_all_gpus and spec.gpus else spec.gpus
        for node in gpu_device_nodes(gpus):
            args += ["--dev-bind", str(node), str(node)]
        for mount in python_runtime() + spec.mounts:
            args += ["--bind" if mount.writable else "--ro-bind", str(mount.path), str(mount.path)]
        return [*args, "--chdir", str(spec.cwd), "--"]

    def _unprivileged_user(self, spec: RunSpec) -> tuple[int, int] | None:
        """The user a root worker drops to before bubblewrap, when it can reach every bind."""
        if not self.isolated or os.geteuid() != 0:
            return None
        for mount in python_runtime() + spec.mounts:
            blocked = unreachable_ancestor(mount.path.parent)
            if blocked is None and not mount.writable and not _readable_by_others(mount.path):
                blocked = mount.path
            if blocked is not None:
                if blocked not in self._warned:
                    self._warned.add(blocked)
                    log.warning(
                        "bubblewrap runs as root (mapped to uid %s inside): %s is not reachable "
                        "by uid %s; `chmod o+x` on it lets the sandbox drop root", self.user[0],
                        blocked, self.user[0],
                    )  # fmt: skip
                return None
        return self.user

    def kill_stale(self, pid_file: Path) -> None:
        """Kill what the recorded run left: its cgroup, else its process group in the run dir."""
        record = read_pid_file(pid_file)
        if record is None or record[0] != socket.gethostname():
            return
        pid, _, group = record[1].partition(":")
        if group and self.cgroups is not None:
            self.cgroups.group(group).remove()
        if pid.isdigit():
            for member in group_members(int(pid), str(pid_file.parent)):
                with contextlib.suppress(OSError):
                    os.kill(member, signal.SIGKILL)


def gpu_device_nodes(gpus: list[str], dev: Path = Path("/dev")) -> list[Path]:
    """The device nodes a run with `gpus` needs: those GPUs and the driver's control nodes."""
    if not gpus:
        return []
    names = [f"nvidia{g}" for g in gpus if g.isdigit()]
    if len(names) < len(gpus):  # ids that are not indices (UUIDs): bind every GPU node
        names = [p.name for p in dev.glob("nvidia[0-9]*")]
    return [dev / n for n in sorted(set(names)) + list(NVIDIA_CONTROL) if (dev / n).exists()]


def unreachable_ancestor(path: Path) -> Path | None:
    """The first directory on the way to `path` that others cannot enter, or None."""
    for directory in [*reversed(path.parents), path]:
        try:
            mode = directory.stat().st_mode
        except OSError:
            return directory
        if stat.S_ISDIR(mode) and not mode & stat.S_IXOTH:
            return directory
    return None


def _readable_by_others(path: Path) -> bool:
    try:
        mode = path.stat().st_mode
    except OSError:
        return False
    need = stat.S_IROTH | (stat.S_IXOTH if stat.S_ISDIR(mode) else 0)
    return mode & need == need


def _hosts_file() -> Path:
    path = Path(tempfile.gettempdir()) / f"lossgym-hosts-{os.getuid()}"
    if not path.is_file() or path.read_text() != HOSTS:
        path.write_text(HOSTS)
        path.chmod(0o644)
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
            stat_line = (entry / "stat").read_text()
            group = int(stat_line.rsplit(")", 1)[1].split()[2])
            cwd = os.readlink(entry / "cwd")
        except (OSError, ValueError, IndexError):
            continue
        if group == pgid and (cwd == run_dir or cwd.startswith(run_dir + "/")):
            found.append(int(entry.name))
    return found


def _kill_group(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM the process group, then SIGKILL whatever is left after a grace period."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGTERM)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=KILL_GRACE_S)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
