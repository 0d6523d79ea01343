"""The Slurm runner beyond the shared suite: what it submits, GPUs, states, reattaching.

The shared runner suite (test_runners.py) runs on `slurm` too. Here: the batch
script and the multi-node rewrite (pure), then against the real single-node
cluster `.ci/provision-slurm` starts (4 fake GPUs): disjoint GPUs for two
2-GPU jobs while a third waits, one squeue per interval for many jobs, a job
killed from outside as the infrastructure's failure, and a second worker
adopting a job instead of submitting it again.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from lossgym.sandbox.runner import PYTHON, Limits, Mount, RunResult, RunSpec, base_env
from lossgym.sandbox.slurm_job import apptainer_argv, multi_node_argv
from lossgym.sandbox.slurm_queue import Slurm, SlurmError
from lossgym.sandbox.slurm_runner import SlurmRunner, job_files
from tests.sandbox.runner_fixtures import make_test_runner, wait_until


def _spec(root: Path, code: str, name: str = "run", **kw: object) -> RunSpec:
    work = root / name
    work.mkdir(parents=True, exist_ok=True)
    return RunSpec(
        [PYTHON, "-c", code], work, root / f"{name}.log", 120.0, base_env({}),
        pid_file=root / f"{name}.pid", mounts=[Mount(work, writable=True)], **kw,  # type: ignore[arg-type]
    )  # fmt: skip


def _job_id(spec: RunSpec) -> str:
    """The Slurm job id the runner wrote to the run's pid file."""
    assert spec.pid_file is not None
    return spec.pid_file.read_text().split()[1]


def _started(spec: RunSpec) -> bool:
    """GPU_JOB prints its GPUs first thing."""
    return "CVD" in (spec.log_path.read_text() if spec.log_path.exists() else "")


def _run_expecting_an_error(
    runner: SlurmRunner, spec: RunSpec
) -> tuple[threading.Thread, list[BaseException]]:
    """Start `spec` in a thread that keeps the OSError its run ends with; return once
    the job has started."""
    errors: list[BaseException] = []

    def run() -> None:
        try:
            runner.run(spec)
        except OSError as error:
            errors.append(error)

    thread = threading.Thread(target=run)
    thread.start()
    wait_until(lambda: _started(spec), "the job to start", 90.0)
    return thread, errors


def _adopt_and_finish(runner: SlurmRunner, spec: RunSpec) -> RunResult:
    """Follow `spec`'s job (it is running already), let it end, and return its result."""
    results: list[RunResult] = []
    adopter = threading.Thread(target=lambda: results.append(runner.run(spec)))
    adopter.start()
    (spec.cwd / "go").write_text("")
    adopter.join(timeout=90)
    assert results, "the adopted job did not end"
    return results[0]


# -- what is submitted (no cluster needed) ------------------------------------


def test_batch_script_carries_the_stages_resources_and_the_sites_flags(tmp_path: Path) -> None:
    runner = SlurmRunner(
        partition="gpu", account="lab", qos="high", extra="--constraint=h100 --exclusive",
        slurm=Slurm("nobody"),
    )  # fmt: skip
    spec = _spec(tmp_path, "pass", gpus=["0", "1"], limits=Limits(memory_bytes=2**30, cpus=3.5))
    spec.timeout_s = 700.0
    script = runner.batch_script(spec, job_files(spec))
    lines = script.splitlines()
    for wanted in [
        "#SBATCH --gres=gpu:2", "#SBATCH --time=14", "#SBATCH --nodes=1",
        "#SBATCH --cpus-per-task=4", "#SBATCH --mem=1536M", "#SBATCH --export=NONE",
        "#SBATCH --partition=gpu", "#SBATCH --account=lab", "#SBATCH --qos=high",
        "#SBATCH --constraint=h100", "#SBATCH --exclusive",
    ]:  # fmt: skip
        assert wanted in lines, f"{wanted!r} missing from\n{script}"
    assert lines[-1].startswith("exec ") and "lossgym.sandbox.slurm_job" in lines[-1]
    assert "srun" not in script and "#SBATCH --no-requeue" in lines
    # The site's flags come first: a later line wins, so none can undo ours.
    assert lines.index("#SBATCH --exclusive") < lines.index("#SBATCH --export=NONE")


def test_a_stage_larger_than_a_node_runs_across_nodes_only_when_allowed(tmp_path: Path) -> None:
    spec = _spec(tmp_path, "pass", gpus=[str(i) for i in range(16)])
    with pytest.raises(SlurmError, match="LOSSGYM_SLURM_MULTI_NODE"):
        SlurmRunner(gpus_per_node=8, slurm=Slurm("nobody")).batch_script(spec, tmp_path)
    runner = SlurmRunner(gpus_per_node=8, multi_node=True, slurm=Slurm("nobody"))
    script = runner.batch_script(spec, tmp_path)
    assert "#SBATCH --nodes=2" in script and "#SBATCH --gres=gpu:8" in script
    assert "srun --nodes=2 --ntasks-per-node=1" in script and "LOSSGYM_HEAD_NODE" in script
    assert "--kill-on-bad-exit" not in script, "a node's failure must leave its result"
    twelve = _spec(tmp_path, "pass", gpus=[str(i) for i in range(12)])
    assert "#SBATCH --gres=gpu:6" in runner.batch_script(twelve, tmp_path), "6 + 6, not 8 + 8"
    nine = _spec(tmp_path, "pass", gpus=[str(i) for i in range(9)])
    with pytest.raises(SlurmError, match="evenly"):
        runner.batch_script(nine, tmp_path)


def test_torchrun_standalone_becomes_a_rendezvous_on_the_first_node() -> None:
    argv = ["python", "-m", "lossgym.trainer.torchrun", "--standalone", "--nproc_per_node=16", "x"]
    assert multi_node_argv(argv, 1, 0, "10.0.0.1", "7") == argv
    out = multi_node_argv(argv, 2, 1, "10.0.0.1", "7")
    assert "--standalone" not in out and "--nproc_per_node=8" in out, "ranks split over nodes"
    assert {"--nnodes=2", "--node_rank=1", "--rdzv_backend=c10d"} <= set(out)
    assert "--rdzv_endpoint=10.0.0.1:20007" in out and out[-1] == "x", "a port per job"


def test_apptainer_sees_the_mounts_read_only_and_no_network(tmp_path: Path) -> None:
    spec = _spec(tmp_path, "pass", gpus=["0"])
    spec.mounts.append(Mount(tmp_path / "shard.bin"))
    argv = apptainer_argv(spec, "/images/lossgym.sif", share_net=False)
    assert argv[:3] == ["apptainer", "exec", "--containall"] and argv[-1] == "/images/lossgym.sif"
    assert "hostfs,bind-paths,cwd" in argv and "--nv" in argv
    assert "CUDA_VISIBLE_DEVICES=0" in argv, "--containall cleans the environment"
    assert "--net" in argv and argv[argv.index("--network") + 1] == "none"
    assert f"{tmp_path / 'shard.bin'}:{tmp_path / 'shard.bin'}:ro" in argv
    assert f"{tmp_path / 'run'}:{tmp_path / 'run'}:rw" in argv


def test_paths_outside_the_shared_filesystem_or_unsafe_for_sbatch_are_refused(
    tmp_path: Path,
) -> None:
    runner = SlurmRunner(shared_dir=tmp_path / "shared", slurm=Slurm("nobody"))
    with pytest.raises(SlurmError, match="shared filesystem"):
        runner.run(_spec(tmp_path, "pass"))
    for name in ("with space", "with%j"):
        with pytest.raises(SlurmError, match="whitespace or %"):
            SlurmRunner(slurm=Slurm("nobody")).run(_spec(tmp_path / name, "pass"))


def test_an_unisolated_slurm_runner_is_marked_so() -> None:
    assert SlurmRunner(slurm=Slurm("nobody")).name == "slurm"
    plain = SlurmRunner(container="none", slurm=Slurm("nobody"))
    assert plain.name == "local" and not plain.isolated  # "local" marks it on the leaderboard


@pytest.mark.parametrize("state", ["NODE_FAIL", "PREEMPTED", "BOOT_FAIL", "CANCELLED", "VANISHED"])
def test_infrastructure_states_are_errors_not_results(tmp_path: Path, state: str) -> None:
    runner = SlurmRunner(slurm=Slurm("nobody"))
    with pytest.raises(SlurmError):
        runner._ended_without_result("1", state, _spec(tmp_path, "pass"), 1.0)
    timeout = runner._ended_without_result("1", "TIMEOUT", _spec(tmp_path, "pass"), 1.0)
    assert timeout.timed_out and timeout.exit_code is None


# -- on the real cluster --------------------------------------------------------


@pytest.fixture
def slurm_runner() -> SlurmRunner:
    return make_test_runner("slurm")  # type: ignore[return-value]


GPU_JOB = """
import os, time
print("CVD", os.environ.get("CUDA_VISIBLE_DEVICES"), flush=True)
while not os.path.exists("go"):
    time.sleep(0.05)
"""


def test_two_gpu_jobs_get_disjoint_gpus_and_a_third_waits(
    slurm_runner: SlurmRunner, tmp_path: Path
) -> None:
    specs = [_spec(tmp_path, GPU_JOB, f"job{i}", gpus=["0", "1"]) for i in range(3)]
    results: dict[int, RunResult] = {}
    threads = [
        threading.Thread(target=lambda i=i: results.update({i: slurm_runner.run(specs[i])}))
        for i in range(3)
    ]
    threads[0].start()
    threads[1].start()

    def visible(i: int) -> set[str] | None:
        text = specs[i].log_path.read_text() if specs[i].log_path.exists() else ""
        line = next((ln for ln in text.splitlines() if ln.startswith("CVD ")), None)
        return set(line.split()[1].split(",")) if line else None

    wait_until(
        lambda: visible(0) is not None and visible(1) is not None, "both jobs to start", 90.0
    )
    first, second = visible(0), visible(1)
    assert first and second and len(first) == len(second) == 2 and not first & second
    threads[2].start()
    wait_until(
        lambda: job_files(specs[2]).joinpath("job.sh").exists(), "the third submission", 90.0
    )
    job_id = _job_id(specs[2])
    wait_until(
        lambda: slurm_runner.queue.lookup(job_id) == "PENDING", "the third to be queued", 90.0
    )
    assert visible(2) is None, "a third 2-GPU job must wait on a 4-GPU node"
    (specs[0].cwd / "go").write_text("")
    wait_until(lambda: visible(2) is not None, "the third job to start once the first ended", 90.0)
    assert visible(2) == first
    for spec in specs[1:]:
        (spec.cwd / "go").write_text("")
    for thread in threads:
        thread.join(timeout=90)
    assert [results[i].exit_code for i in range(3)] == [0, 0, 0]


def test_one_squeue_per_interval_for_many_jobs(tmp_path: Path) -> None:
    runner = make_test_runner("slurm")
    assert isinstance(runner, SlurmRunner)
    runner.queue.poll_s = 0.5
    code = "import time; time.sleep(3)"
    specs = [_spec(tmp_path, code, f"job{i}") for i in range(6)]
    threads = [threading.Thread(target=runner.run, args=(spec,)) for spec in specs]
    start = time.monotonic()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    elapsed = time.monotonic() - start
    calls = runner.slurm.calls
    assert calls["sbatch"] == 6
    assert calls["squeue"] <= elapsed / 0.5 + 2, (
        f"{calls['squeue']} squeue calls in {elapsed:.1f} s"
    )


def test_a_job_cancelled_from_outside_is_the_infrastructures_failure(
    slurm_runner: SlurmRunner, tmp_path: Path
) -> None:
    spec = _spec(tmp_path, GPU_JOB)
    thread, errors = _run_expecting_an_error(slurm_runner, spec)
    slurm_runner.slurm.scancel(spec.pid_file.read_text().split()[1])  # type: ignore[union-attr]
    thread.join(timeout=90)
    assert errors and isinstance(errors[0], SlurmError) and "outside" in str(errors[0])


def test_a_second_worker_adopts_the_job_instead_of_submitting_it_again(tmp_path: Path) -> None:
    first, second = make_test_runner("slurm"), make_test_runner("slurm")
    assert isinstance(first, SlurmRunner) and isinstance(second, SlurmRunner)
    spec = _spec(tmp_path, GPU_JOB)
    orphan = threading.Thread(target=lambda: first.run(spec), daemon=True)
    orphan.start()  # the first worker's run: it "dies" (its thread is simply abandoned)
    wait_until(lambda: _started(spec), "the job to start", 90.0)
    assert second.reattachable(spec.pid_file)  # type: ignore[arg-type]
    assert _adopt_and_finish(second, spec).exit_code == 0
    assert second.slurm.calls["sbatch"] == 0, "the job was submitted again"
    assert spec.log_path.read_text().count("CVD") == 1


def test_a_job_its_node_lost_is_the_infrastructures_failure(tmp_path: Path) -> None:
    """The job's step and processes are killed (a node crash) while Slurm still says
    RUNNING: the silence of its heartbeat gives it away."""
    import subprocess

    runner = make_test_runner("slurm")
    assert isinstance(runner, SlurmRunner)
    runner.heartbeat_s, runner.lost_after_s = 0.5, 4.0
    spec = _spec(tmp_path, GPU_JOB)
    thread, errors = _run_expecting_an_error(runner, spec)
    job_id = _job_id(spec)
    subprocess.run(["pkill", "-9", "-f", rf"slurmstepd: \[{job_id}\."], check=False)
    subprocess.run(["pkill", "-9", "-f", str(job_files(spec))], check=False)
    thread.join(timeout=90)
    assert errors and isinstance(errors[0], SlurmError) and "lost" in str(errors[0])


def test_a_detaching_worker_leaves_the_job_running_for_the_next(tmp_path: Path) -> None:
    """A worker that stops (or loses the test) detaches; its successor adopts the job."""
    first, second = make_test_runner("slurm"), make_test_runner("slurm")
    assert isinstance(first, SlurmRunner) and isinstance(second, SlurmRunner)
    spec = _spec(tmp_path, GPU_JOB)
    stop = threading.Event()
    stop.detach = True  # type: ignore[attr-defined]
    results: list[RunResult] = []
    leaving = threading.Thread(target=lambda: results.append(first.run(spec, stop)))
    leaving.start()
    wait_until(lambda: _started(spec), "the job to start", 90.0)
    stop.set()
    leaving.join(timeout=60)
    assert results[0].cancelled and first.slurm.calls["scancel"] == 0
    job_id = _job_id(spec)
    assert second.queue.lookup(job_id) == "RUNNING"
    assert _adopt_and_finish(second, spec).exit_code == 0
    assert second.slurm.calls["sbatch"] == 0


def test_only_this_jobs_complete_result_counts(tmp_path: Path) -> None:
    from lossgym.sandbox.slurm_job import fill_in_place, reserve
    from lossgym.sandbox.slurm_runner import _results

    reserve(tmp_path / "result.json")
    assert _results(tmp_path, 1, "7") is None, "a reserved, blank result is no result"
    fill_in_place(tmp_path / "result.json", '{"exit_code": 0, "timed_out": false, '
                  '"seconds": 1.0, "started": 0, "job": "6"}')  # fmt: skip
    assert _results(tmp_path, 1, "7") is None, "an older job's result is not this job's"
    record = '{"exit_code": 0, "timed_out": false, "seconds": 2.0, "started": 0, "job": "7"}'
    fill_in_place(tmp_path / "result.json", record)
    assert (tmp_path / "result.json").stat().st_size == 512, "filled in place, same size"
    reserve(tmp_path / "result.1.json")
    assert _results(tmp_path, 2, "7") is None, "every node's result is needed"
    fill_in_place(tmp_path / "result.1.json", record.replace('"exit_code": 0', '"exit_code": 1'))
    done = _results(tmp_path, 2, "7")
    assert done is not None and done.exit_code == 1, "a failing node fails the run"


class _AdoptedRunner:
    """A queuing runner whose job had already ended when the worker reattached."""

    queues = True

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds

    def run(self, spec: RunSpec, cancel: threading.Event | None = None) -> RunResult:
        assert spec.on_start is not None
        spec.on_start(time.time() - self.seconds)
        return RunResult(0, False, False, self.seconds)


@pytest.mark.parametrize(("seconds", "timed_out"), [(5.0, False), (100.0, True)])
def test_an_adopted_job_that_ended_before_go_is_its_result_within_its_limit(
    tmp_path: Path, seconds: float, timed_out: bool
) -> None:
    from lossgym.sandbox.standby import Standby

    spec = _spec(tmp_path, "pass")
    standby = Standby(_AdoptedRunner(seconds), spec, tmp_path)  # type: ignore[arg-type]
    standby._thread.join()  # the adopted result came back before the hand-over
    standby.go({}, time_limit_s=20.0)
    result = standby.wait()
    assert result.timed_out == timed_out and result.exit_code == (None if timed_out else 0)
