"""The Slurm dispatcher under load: many stages queued at once through one `SlurmRunner`.

Submits `--stages` tiny runs at once (each sleeps `--work-s` in the configured
container), as a worker with that many slots would, and prints:
- Slurm calls per minute, by command (sbatch once per stage; squeue once per
  poll interval for all of them, however many are queued);
- the time from a job's end (its wrapper's result file) to the runner
  returning its result (what the worker records next), p50 / p95 / max;
- the wall time of the whole batch.

Needs a Slurm cluster (`.ci/provision-slurm` starts a one-node one).

    .venv/bin/python bench/slurm_dispatch.py --stages 200 --poll-s 2
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from lossgym.sandbox.runner import PYTHON, Mount, RunSpec, base_env  # noqa: E402
from lossgym.sandbox.slurm_job import RESULT_FILE  # noqa: E402
from lossgym.sandbox.slurm_runner import SlurmRunner, job_files  # noqa: E402


def parse() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--stages", type=int, default=200, help="runs queued at once")
    p.add_argument("--poll-s", type=float, default=2.0, help="seconds between squeue calls")
    p.add_argument("--work-s", type=float, default=1.0, help="what each run does: sleep")
    p.add_argument("--container", default="bwrap", choices=["bwrap", "none"])
    return p.parse_args()


def main() -> None:
    a = parse()
    runner = SlurmRunner(container=a.container, poll_s=a.poll_s)
    root = Path(tempfile.mkdtemp(prefix="lossgym-slurm-bench-"))
    root.chmod(0o755)
    lag: list[float] = []
    failures: list[str] = []
    lock = threading.Lock()

    def one(i: int) -> None:
        work = root / f"s{i}"
        work.mkdir()
        spec = RunSpec(
            [PYTHON, "-c", f"import time; time.sleep({a.work_s})"], work, root / f"s{i}.log",
            300.0, base_env({}), pid_file=root / f"s{i}.pid", mounts=[Mount(work, writable=True)],
        )  # fmt: skip
        try:
            result = runner.run(spec)
        except OSError as error:
            with lock:
                failures.append(str(error))
            return
        returned = time.time()
        ended = (job_files(spec) / RESULT_FILE).stat().st_mtime
        with lock:
            lag.append(returned - ended)
            if result.exit_code != 0:
                failures.append(f"stage {i}: exit {result.exit_code}")

    threads = [threading.Thread(target=one, args=(i,)) for i in range(a.stages)]
    start = time.monotonic()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    minutes = (time.monotonic() - start) / 60
    calls = dict(runner.slurm.calls)
    print(f"stages {a.stages}, work {a.work_s:g} s each, container {a.container}, "
          f"poll {a.poll_s:g} s: all done in {minutes * 60:.1f} s")  # fmt: skip
    print("slurm calls: " + ", ".join(f"{k} {v} ({v / minutes:.1f}/min)" for k, v in calls.items()))
    if lag:
        lag.sort()
        p95 = lag[min(len(lag) - 1, int(0.95 * len(lag)))]
        print(f"job end -> result returned: p50 {statistics.median(lag):.2f} s, "
              f"p95 {p95:.2f} s, max {lag[-1]:.2f} s")  # fmt: skip
    print(f"failures: {len(failures)}" + (f" (first: {failures[0]})" if failures else ""))


if __name__ == "__main__":
    main()
