"""Peak host memory of one real test: training (torchrun + ranks) and the evaluator.

Runs the train stages of a profile (default ``tiny-cpu``) exactly as the worker
does: ``lossgym.sandbox.stages.run_train_stage`` with a ``LocalRunner``, on the
unmodified template (the ``cross_entropy`` baseline) and the task's first seed.
While it runs, a thread reads ``/proc`` every ``--interval`` seconds and sums
the resident memory of every descendant of this process (torchrun, its ranks,
the evaluator). RSS counts shared pages (libraries, the memory-mapped shards)
once per process, so the RSS sum is an upper bound; the PSS sum (from
``smaps_rollup``) shares them out and is what the processes really occupy.

    .venv/bin/python bench/peak_memory.py                 # tiny-cpu, ~2 min on 2 cores
    .venv/bin/python bench/peak_memory.py --limit-gb 4    # exit 1 if the RSS sum exceeds 4 GB
"""

from __future__ import annotations

import argparse
import os
import resource
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from lossgym.env.task import load_task  # noqa: E402
from lossgym.sandbox.local_runner import LocalRunner  # noqa: E402
from lossgym.sandbox.stages import StageJob, run_train_stage, train_job  # noqa: E402

PAGE = os.sysconf("SC_PAGE_SIZE")
GB = 1e9


@dataclass
class Peaks:
    """The largest values seen over all samples (bytes)."""

    rss_sum: int = 0
    pss_sum: int = 0
    single: int = 0
    single_cmd: str = ""
    procs_at_peak: list[str] = field(default_factory=list)
    rss_sum_at: float = 0.0  # seconds after the start
    samples: int = 0
    start: float = field(default_factory=time.monotonic)


def process_table() -> dict[int, tuple[int, int]]:
    """pid → (parent pid, resident bytes) of every process we can read."""
    table = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue  # the process ended while we looked
        table[int(entry.name)] = (int(fields[1]), int(fields[21]) * PAGE)
    return table


def descendants(root: int, table: dict[int, tuple[int, int]]) -> list[int]:
    children: dict[int, list[int]] = {}
    for pid, (ppid, _rss) in table.items():
        children.setdefault(ppid, []).append(pid)
    found, todo = [], list(children.get(root, []))
    while todo:
        pid = todo.pop()
        found.append(pid)
        todo += children.get(pid, [])
    return found


def pss(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            return next(int(ln.split()[1]) * 1024 for ln in f if ln.startswith("Pss:"))
    except (OSError, StopIteration, ValueError):
        return 0


def command(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            argv = f.read().split(b"\0")
    except OSError:
        return "?"
    return " ".join(a.decode(errors="replace") for a in argv[:5] if a)[:90]


def sample(root: int, peaks: Peaks) -> None:
    table = process_table()
    pids = descendants(root, table)
    rss = {pid: table[pid][1] for pid in pids}
    total = sum(rss.values())
    peaks.samples += 1
    peaks.pss_sum = max(peaks.pss_sum, sum(pss(pid) for pid in pids))
    if total > peaks.rss_sum:
        peaks.rss_sum, peaks.rss_sum_at = total, time.monotonic() - peaks.start
        peaks.procs_at_peak = [f"{rss[p] / GB:.2f} GB  {command(p)}" for p in sorted(pids)]
    if rss and max(rss.values()) > peaks.single:
        pid = max(rss, key=rss.__getitem__)
        peaks.single, peaks.single_cmd = rss[pid], command(pid)


def watch(peaks: Peaks, stop: threading.Event, interval: float) -> None:
    root = os.getpid()
    while True:
        sample(root, peaks)
        if stop.wait(interval):
            return


def stage_jobs(args: argparse.Namespace, runs_dir: Path) -> list[StageJob]:
    """The profile's train stages as the worker builds them (see sandbox/worker.py)."""
    task = load_task(args.tasks_dir, args.task)
    jobs = []
    for stage in task.profile(args.profile).stages:
        if stage.kind != "train":
            print(f"skipping {stage.kind} stage {stage.label}")
            continue
        ws = task.new_workspace()
        regions = {p: [r.to_dict() for r in ws.regions_of(p)] for p in ws.files}
        jobs.append(train_job(task, stage, runs_dir / stage.label, args.data_dir,
                              dict(ws.files), regions, task.spec.seeds[0]))  # fmt: skip
    return jobs


def run_stages(args: argparse.Namespace, runs_dir: Path) -> bool:
    runner = LocalRunner(isolation=args.isolation)
    ok = True
    for job in stage_jobs(args, runs_dir):
        outcome = run_train_stage(job, runner, threading.Event())
        metrics = ", ".join(f"{k}={v:.4f}" for k, v in outcome.metrics.items())
        print(f"stage {job.label}: {outcome.status} {outcome.reason} "
              f"train {outcome.train_s:.1f}s, eval {outcome.eval_s:.1f}s  {metrics}")  # fmt: skip
        ok = ok and outcome.status == "ok"
    return ok


def report(peaks: Peaks, wall: float, limit_gb: float) -> bool:
    children_kb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    self_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(f"wall {wall:.1f}s, {peaks.samples} samples of /proc")
    print(f"peak RSS summed over the process tree: {peaks.rss_sum / GB:.2f} GB "
          f"at {peaks.rss_sum_at:.0f}s, made of")  # fmt: skip
    for line in peaks.procs_at_peak:
        print(f"    {line}")
    print(f"peak PSS summed over the process tree: {peaks.pss_sum / GB:.2f} GB")
    print(f"largest single process RSS: {peaks.single / GB:.2f} GB  ({peaks.single_cmd})")
    print(f"ru_maxrss of children (largest descendant): {children_kb * 1024 / GB:.2f} GB")
    print(f"this benchmark process (worker side): {self_kb * 1024 / GB:.2f} GB")
    under = peaks.rss_sum < limit_gb * GB
    print(f"{'under' if under else 'OVER'} the {limit_gb:g} GB target")
    return under


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--task", default="llm-pretrain-loss")
    p.add_argument("--profile", default="tiny-cpu")
    p.add_argument("--tasks-dir", type=Path, default=REPO / "tasks")
    default_data = os.environ.get("LOSSGYM_DATA_DIR", str(REPO / "data"))
    p.add_argument("--data-dir", type=Path, default=Path(default_data).resolve())
    p.add_argument("--isolation", choices=("none", "bwrap"), default="bwrap")
    p.add_argument("--interval", type=float, default=0.2, help="seconds between samples")
    p.add_argument("--limit-gb", type=float, default=4.0)
    args = p.parse_args()

    peaks, stop = Peaks(), threading.Event()
    sampler = threading.Thread(target=watch, args=(peaks, stop, args.interval), daemon=True)
    with tempfile.TemporaryDirectory(prefix="lossgym-peakmem-") as runs_dir:
        sampler.start()
        try:
            ok = run_stages(args, Path(runs_dir))
        finally:
            stop.set()
            sampler.join()
    under = report(peaks, time.monotonic() - peaks.start, args.limit_gb)
    return 0 if ok and under else 1


if __name__ == "__main__":
    sys.exit(main())
