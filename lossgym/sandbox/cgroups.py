"""Control groups for local runs: memory, CPU and process limits, and a whole-tree kill.

Every local run (isolated by bubblewrap or not) starts inside a cgroup of its
own. The kernel then enforces its `Limits`, and the end of a run kills every
process in the group, including children that called `setsid` or
double-forked out of the process group.

cgroup v1 (one hierarchy per controller, as on the CI machines) and v2 (one
unified tree) are both handled. A run joins its group before the command
starts: `enter.py` writes its own pid into the group, drops privileges if
asked, then execs the command, so nothing the command forks is ever outside.
Creating groups needs write access to the hierarchy (root, or a delegated
subtree); where there is none, `detect()` says why and the runner reports
that limits are not enforced.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

from lossgym.sandbox.runner import Limits

V1_CONTROLLERS = ("memory", "pids", "cpu", "freezer")
V2_CONTROLLERS = ("memory", "pids", "cpu")
PARENT = "lossgym"
CFS_PERIOD_US = 100_000
DRAIN_S = 10.0


@dataclass(frozen=True)
class Hierarchy:
    version: int  # 1 or 2
    dirs: dict[str, Path]  # controller → our parent directory ("unified" for v2)


class RunCgroup:
    """One run's group: the files its first process joins, its limits, its kill."""

    def __init__(self, hierarchy: Hierarchy, name: str) -> None:
        self.hierarchy, self.name = hierarchy, name
        self.dirs = {c: d / name for c, d in hierarchy.dirs.items()}

    @property
    def procs_files(self) -> list[Path]:
        return [d / "cgroup.procs" for d in self.dirs.values()]

    def create(self, limits: Limits) -> None:
        for directory in self.dirs.values():
            directory.mkdir(exist_ok=True)
        v1 = self.hierarchy.version == 1
        memory, pids, cpu = (self.dirs.get(c, self.dirs.get("unified")) for c in V2_CONTROLLERS)
        if limits.memory_bytes:
            if v1:
                _write(memory / "memory.limit_in_bytes", limits.memory_bytes)
                _write_if_present(memory / "memory.memsw.limit_in_bytes", limits.memory_bytes)
            else:
                _write(memory / "memory.max", limits.memory_bytes)
                _write_if_present(memory / "memory.swap.max", 0)
        if limits.pids:
            _write(pids / "pids.max", limits.pids)
        if limits.cpus:
            quota = max(1000, int(limits.cpus * CFS_PERIOD_US))
            if v1:
                _write(cpu / "cpu.cfs_period_us", CFS_PERIOD_US)
                _write(cpu / "cpu.cfs_quota_us", quota)
            else:
                _write(cpu / "cpu.max", f"{quota} {CFS_PERIOD_US}")

    def pids(self) -> set[int]:
        found: set[int] = set()
        for procs in self.procs_files:
            with contextlib.suppress(OSError, ValueError):
                found |= {int(p) for p in procs.read_text().split()}
        return found

    def kill(self) -> None:
        """Kill every process in the group and wait until it is empty."""
        deadline = time.monotonic() + DRAIN_S
        while (pids := self.pids()) and time.monotonic() < deadline:
            self._freeze(True)  # nothing forks between listing and killing
            for pid in pids:
                with contextlib.suppress(OSError):
                    os.kill(pid, signal.SIGKILL)
            self._freeze(False)  # a frozen task cannot die
            time.sleep(0.02)

    def _freeze(self, frozen: bool) -> None:
        if self.hierarchy.version == 1 and "freezer" in self.dirs:
            state = self.dirs["freezer"] / "freezer.state"
            _write_if_present(state, "FROZEN" if frozen else "THAWED")
        elif self.hierarchy.version == 2:
            _write_if_present(self.dirs["unified"] / "cgroup.freeze", int(frozen))

    def oom_killed(self) -> bool:
        memory = self.dirs.get("memory", self.dirs.get("unified"))
        if memory is None:
            return False
        name = "memory.oom_control" if self.hierarchy.version == 1 else "memory.events"
        with contextlib.suppress(OSError, ValueError):
            for line in (memory / name).read_text().splitlines():
                key, _, value = line.partition(" ")
                if key == "oom_kill" and int(value) > 0:
                    return True
        return False

    def remove(self) -> None:
        self.kill()
        for directory in self.dirs.values():
            with contextlib.suppress(OSError):
                directory.rmdir()


def _write(path: Path, value: object) -> None:
    path.write_text(f"{value}\n")


def _write_if_present(path: Path, value: object) -> None:
    if path.exists():
        with contextlib.suppress(OSError):
            _write(path, value)


class Cgroups:
    """Where this machine lets LossGym create run groups."""

    def __init__(self, hierarchy: Hierarchy) -> None:
        self.hierarchy = hierarchy

    @property
    def version(self) -> int:
        return self.hierarchy.version

    def new_group(self, limits: Limits, name: str | None = None) -> RunCgroup:
        group = RunCgroup(self.hierarchy, name or f"run-{uuid.uuid4().hex[:16]}")
        try:
            group.create(limits)
        except OSError:
            group.remove()
            raise
        return group

    def group(self, name: str) -> RunCgroup:
        """An existing group by name (to kill what a dead worker's run left)."""
        return RunCgroup(self.hierarchy, name)


def detect(mountinfo: Path = Path("/proc/self/mountinfo")) -> Cgroups | str:
    """The usable hierarchy, or a one-line reason there is none."""
    try:
        mounts = _cgroup_mounts(mountinfo.read_text())
        own = _own_paths(Path("/proc/self/cgroup").read_text())
    except OSError as error:
        return f"cannot read the cgroup mounts: {error}"
    v1 = {c: m for c, m in mounts.items() if c in V1_CONTROLLERS}
    if all(c in v1 for c in ("memory", "pids", "cpu")):
        found = _parents({c: _inside(m, own.get(c, "/")) for c, m in v1.items()})
        return Cgroups(Hierarchy(1, found)) if isinstance(found, dict) else found
    if "unified" in mounts:
        return _detect_v2(mounts["unified"])
    return "no cgroup hierarchy with the memory, pids and cpu controllers is mounted"


def _detect_v2(mount: tuple[Path, str]) -> Cgroups | str:
    root = mount[0]
    available = set((root / "cgroup.controllers").read_text().split()) if root.exists() else set()
    missing = [c for c in V2_CONTROLLERS if c not in available]
    if missing:
        return f"cgroup v2 at {root} lacks the {', '.join(missing)} controller(s)"
    found = _parents({"unified": root})
    if isinstance(found, str):
        return found
    enable = " ".join(f"+{c}" for c in V2_CONTROLLERS)
    _write_if_present(root / "cgroup.subtree_control", enable)  # the root may hold processes
    try:  # run groups go below PARENT, which holds none itself
        _write(found["unified"] / "cgroup.subtree_control", enable)
    except OSError as error:
        return f"cannot enable controllers in {found['unified']}: {error.strerror}"
    return Cgroups(Hierarchy(2, found))


def _parents(bases: dict[str, Path]) -> dict[str, Path] | str:
    parents = {}
    for controller, base in bases.items():
        parent = base / PARENT
        try:
            parent.mkdir(exist_ok=True)
        except OSError as error:
            return f"cannot create cgroups under {base}: {error.strerror} (needs root)"
        if not os.access(parent / "cgroup.procs", os.W_OK):
            return f"cannot write to {parent} (needs root or a delegated cgroup)"
        parents[controller] = parent
    return parents


def _cgroup_mounts(text: str) -> dict[str, tuple[Path, str]]:
    """controller → (mount point, root of the mount); 'unified' for a v2 mount."""
    mounts: dict[str, tuple[Path, str]] = {}
    for line in text.splitlines():
        before, _, after = line.partition(" - ")
        fields, tail = before.split(), after.split()
        if len(fields) < 5 or len(tail) < 3:
            continue
        root, point = fields[3], Path(fields[4])
        if tail[0] == "cgroup2":
            mounts.setdefault("unified", (point, root))
        elif tail[0] == "cgroup":
            for option in tail[2].split(","):
                if option in V1_CONTROLLERS:
                    mounts.setdefault(option, (point, root))
    return mounts


def _own_paths(text: str) -> dict[str, str]:
    """controller → this process's cgroup path (from /proc/self/cgroup)."""
    paths = {}
    for line in text.splitlines():
        _, controllers, path = line.split(":", 2)
        for controller in controllers.split(",") if controllers else ["unified"]:
            paths[controller] = path
    return paths


def _inside(mount: tuple[Path, str], own: str) -> Path:
    """This process's own group directory in a v1 hierarchy mounted at `mount`."""
    point, root = mount
    relative = own[len(root) :] if own.startswith(root) and root != "/" else own
    return point / relative.lstrip("/")
