"""Start-to-first-log of each runner: how long until a run's first output line lands.

For every runner this machine has (local, local+bwrap, docker) it runs, N times,
a command that prints one line and exits, and measures from `runner.run()` to
the first byte in the run's log, and to the end of the run:

- `sh -c 'echo first'`: the sandbox itself (namespaces, container, log copy);
- `python -c print()`: plus the interpreter start-up from the read-only runtime.

Usage: .venv/bin/python bench/container_start.py [--n 10]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import pytest  # noqa: E402

from lossgym.sandbox.runner import PYTHON, Mount, Runner, RunSpec, base_env  # noqa: E402
from tests.sandbox.runner_fixtures import make_test_runner  # noqa: E402

COMMANDS = {
    "sh -c 'echo first'": ["sh", "-c", "echo first"],
    "python -c print()": [PYTHON, "-c", "print('first')"],
}  # noqa: E501


def first_log(runner: Runner, argv: list[str], work: Path) -> tuple[float, float]:
    """(seconds to the first logged byte, seconds to the end of the run)."""
    log = work / "run.log"
    log.unlink(missing_ok=True)
    spec = RunSpec(argv, work, log, 60.0, base_env({}), mounts=[Mount(work, writable=True)])
    start = time.perf_counter()
    done = threading.Event()
    thread = threading.Thread(target=lambda: (runner.run(spec), done.set()))
    thread.start()
    first = None
    while first is None:
        if log.exists() and log.stat().st_size > 0:
            first = time.perf_counter() - start
        elif done.is_set():
            raise RuntimeError(f"no output from {argv}")
        time.sleep(0.002)
    thread.join()
    return first, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=10, help="Runs per runner and command.")
    args = parser.parse_args()
    for kind in ("local", "bwrap", "docker"):
        try:
            runner = make_test_runner(kind)
        except pytest.skip.Exception as why:
            print(f"{kind}: skipped ({why})")
            continue
        for label, argv in COMMANDS.items():
            with tempfile.TemporaryDirectory() as tmp:
                first_log(runner, argv, Path(tmp))  # warm caches once
                times = [first_log(runner, argv, Path(tmp)) for _ in range(args.n)]
            firsts, totals = [t[0] * 1000 for t in times], [t[1] * 1000 for t in times]
            first_p50, total_p50 = statistics.median(firsts), statistics.median(totals)
            print(f"{runner.name:12s} {label:20s} first log p50 {first_p50:6.0f} ms, "
                  f"max {max(firsts):6.0f} ms | whole run p50 {total_p50:6.0f} ms")  # fmt: skip


if __name__ == "__main__":
    main()
