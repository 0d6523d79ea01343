"""What a LossGym Slurm job runs on its node: the trusted half of the Slurm runner.

    python -I -m lossgym.sandbox.slurm_job JOB_DIR

`JOB_DIR` (on the shared filesystem, never mounted into the sandbox) holds
`spec.json`, written by the worker's `SlurmRunner`. This process runs the spec
on its node exactly as the local runner does on a single host: bubblewrap (or
Apptainer), the run's own cgroup for its limits, the whole tree killed at the
end. Then it writes `result.json` beside the spec: the exit code, whether the
time limit stopped it, and when it started. Slurm's state alone cannot say
that without an accounting database; the worker reads this file.

`scancel` sends SIGTERM here: the run is stopped and no result is written, so
the worker tells a cancel of its own from one from outside.

On a multi-node stage (`srun`, one task per node) every node runs this, each
with its own rank in torchrun's rendezvous; node 0 writes the result.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

from lossgym.sandbox.runner import Limits, Mount, RunResult, RunSpec

SPEC_FILE = "spec.json"
RESULT_FILE = "result.json"  # node 0's; node K's is result.K.json
RENDEZVOUS_BASE_PORT = 20000
RESERVED_BYTES = 512  # result and heartbeat files are created this size, then filled in place
EXIT_NO_RESULT = 3  # the job could not run what it was given: the infrastructure's fault
HEARTBEAT_S = 10.0  # how often the job says it is alive (the worker notices silence)
APPTAINER_NET = ["--net", "--network", "none"]


def spec_to_json(
    spec: RunSpec, *, container: str, image: str, user: str, nodes: int, heartbeat_s: float
) -> str:
    """The job's spec as the node reads it (JSON: nothing is unpickled on the node)."""
    return json.dumps(
        {
            "argv": spec.argv,
            "cwd": str(spec.cwd),
            "log_path": str(spec.log_path),
            "timeout_s": spec.timeout_s,
            "env": spec.env,
            "mounts": [[str(m.path), m.writable] for m in spec.mounts],
            "gpus": len(spec.gpus),
            "limits": [spec.limits.memory_bytes, spec.limits.cpus, spec.limits.pids],
            "container": container,
            "image": image,
            "user": user,
            "nodes": nodes,
            "heartbeat_s": heartbeat_s,
        },
        indent=1,
    )


def spec_from_json(data: dict[str, Any], gpus: list[str]) -> RunSpec:
    return RunSpec(
        argv=list(data["argv"]),
        cwd=Path(data["cwd"]),
        log_path=Path(data["log_path"]),
        timeout_s=float(data["timeout_s"]),
        env=dict(data["env"]),
        mounts=[Mount(Path(path), bool(writable)) for path, writable in data["mounts"]],
        gpus=gpus,
        limits=Limits(*data["limits"]),
    )


def multi_node_argv(
    argv: list[str], nodes: int, node_rank: int, head: str, job_id: str
) -> list[str]:
    """torchrun's single-node flags turned into a rendezvous across `nodes` nodes.

    `--standalone` (a local rendezvous) becomes a c10d rendezvous on the first
    node of the allocation (its address, and a port from the job id, so two jobs
    that share a first node do not meet); `--nproc_per_node`, the stage's ranks,
    is split evenly between the nodes.
    """
    if nodes <= 1:
        return argv
    out: list[str] = []
    port = RENDEZVOUS_BASE_PORT + int(job_id) % 20000 if job_id.isdigit() else 29500
    for arg in argv:
        if arg == "--standalone":
            out += [
                f"--nnodes={nodes}", f"--node_rank={node_rank}", "--rdzv_backend=c10d",
                f"--rdzv_endpoint={head}:{port}", f"--rdzv_id=lossgym-{job_id}",
            ]  # fmt: skip
        elif arg.startswith("--nproc_per_node="):
            total = int(arg.split("=", 1)[1])
            out.append(f"--nproc_per_node={max(1, total // nodes)}")
        else:
            out.append(arg)
    return out


def apptainer_argv(spec: RunSpec, image: str, share_net: bool) -> list[str]:
    """`apptainer exec` with the spec's mounts and nothing else of the host.

    `--containall`: its own PID and IPC namespaces, a clean environment, no home,
    /tmp or working directory from the host; `--no-mount hostfs,bind-paths`: none
    of the site's configured binds either.
    """
    args = ["apptainer", "exec", "--containall", "--no-mount", "hostfs,bind-paths,cwd"]
    if not share_net:
        args += APPTAINER_NET
    if spec.gpus:
        args += ["--nv", "--env", f"CUDA_VISIBLE_DEVICES={','.join(spec.gpus)}"]
    for mount in spec.mounts:
        args += ["--bind", f"{mount.path}:{mount.path}:{'rw' if mount.writable else 'ro'}"]
    for key, value in spec.env.items():
        args += ["--env", f"{key}={value}"]
    return [*args, "--pwd", str(spec.cwd), image]


def run(job_dir: Path) -> int:
    data = json.loads((job_dir / SPEC_FILE).read_text())
    nodes, rank = int(data["nodes"]), int(os.environ.get("SLURM_NODEID", "0"))
    job_id = os.environ.get("SLURM_JOB_ID", "0")
    visible = [g for g in os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",") if g]
    want = int(data["gpus"]) // nodes
    if len(visible) < want:  # Slurm's allocation, not the run: exit with no result
        print(f"slurm_job: {want} GPUs asked, {len(visible)} visible", file=sys.stderr)
        return EXIT_NO_RESULT
    spec = spec_from_json(data, visible[:want])
    head = _head_address(os.environ.get("LOSSGYM_HEAD_NODE", "localhost"))
    spec.argv = multi_node_argv(spec.argv, nodes, rank, head, job_id)
    runner = _runner(data, spec, share_net=nodes > 1)
    if runner is None:
        return EXIT_NO_RESULT
    # What this node enforces (the run's cgroup needs root or a delegated hierarchy;
    # without one only Slurm's own --mem and --cpus-per-task hold): in slurm-<id>.out.
    print(f"slurm_job: job {job_id} node {rank}: {runner.describe()}", file=sys.stderr)
    cancel = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: cancel.set())
    signal.signal(signal.SIGINT, lambda *_: cancel.set())
    started = time.time()
    _write(job_dir / f"started.{rank}", json.dumps({"started": started}))
    done = threading.Event()
    beat = threading.Thread(
        target=_heartbeat, args=(job_dir / f"alive.{rank}", done, data["heartbeat_s"]), daemon=True
    )
    beat.start()
    result: RunResult = runner.run(spec, cancel)
    done.set()
    if result.exit_code is not None and result.exit_code < 0:
        # Killed by a signal: scancel signals every process of the job at once, so
        # ours may still be on its way. Give it a moment before calling this the run's.
        cancel.wait(1.0)
    if cancel.is_set():
        return 143  # scancel: no result, so the worker can tell whose cancel it was
    record = {"exit_code": result.exit_code, "timed_out": result.timed_out,
              "seconds": result.seconds, "started": started, "job": job_id}  # fmt: skip
    fill_in_place(job_dir / result_name(rank), json.dumps(record))
    return 0 if result.exit_code == 0 else 1


def result_name(rank: int) -> str:
    return RESULT_FILE if rank == 0 else f"result.{rank}.json"


def reserve(path: Path) -> None:
    """Create `path` at its full size now (the worker does, at submission), so the job
    can fill it in place even when the agent's output has filled the disk since."""
    path.write_text(" " * RESERVED_BYTES)


def fill_in_place(path: Path, text: str) -> None:
    """Overwrite a reserved file in place, padded to its size (JSON allows the spaces)."""
    data = text.encode().ljust(RESERVED_BYTES)[:RESERVED_BYTES]
    try:
        fd = os.open(path, os.O_WRONLY)
    except FileNotFoundError:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o644)
    try:
        os.pwrite(fd, data, 0)
    finally:
        os.close(fd)


def read_filled(path: Path) -> dict[str, Any] | None:
    """What a reserved file holds once filled; None while it is blank (or absent)."""
    try:
        text = path.read_text().strip()
        return json.loads(text) if text else None
    except (OSError, ValueError):
        return None


def _head_address(name: str) -> str:
    """The first node's address, resolved here: inside the sandbox names may not resolve."""
    try:
        return socket.gethostbyname(name)
    except OSError:
        return name


def _runner(data: dict[str, Any], spec: RunSpec, share_net: bool) -> Any:
    """The node's local runner for this spec; None when the container cannot start."""
    from lossgym.sandbox.local_runner import LocalRunner

    if data["container"] == "apptainer":
        from lossgym.sandbox.runner import substitute_python

        wrap = apptainer_argv(spec, data["image"], share_net)
        probe = subprocess.run([*wrap, "true"], capture_output=True, text=True, check=False)
        if probe.returncode != 0:  # Apptainer's own failure must not be the run's
            print(f"slurm_job: apptainer cannot start: {probe.stderr.strip()}", file=sys.stderr)
            return None
        spec.argv = wrap + substitute_python(spec.argv, "python")
        return LocalRunner(isolation="none")
    isolation = "bwrap" if data["container"] == "bwrap" else "none"
    # Slurm may number the GPUs it gives from 0 (ConstrainDevices), so the ids are not
    # device-node names: every GPU node is bound, and the job's cgroup says which work.
    return LocalRunner(isolation=isolation, user=data["user"], share_net=share_net,
                       bind_all_gpus=True)  # fmt: skip


def _heartbeat(path: Path, done: threading.Event, every_s: float) -> None:
    """A counter the worker watches: if it stops while Slurm still says RUNNING, the
    node lost the job (its step was killed, the node rebooted) and the worker retries.
    Written in place into a reserved file, and a failed write is tried again."""
    beats = 0
    while not done.wait(every_s if beats else 0):
        beats += 1
        with contextlib.suppress(OSError):
            fill_in_place(path, str(beats))


def _write(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


if __name__ == "__main__":
    sys.exit(run(Path(sys.argv[1])))
