"""One settings object for the whole service, read from `LOSSGYM_*` variables.

Nothing reads the environment at import time: callers build `Settings()` (or
pass explicit values in tests) and hand it down.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

REPO_ROOT = Path(__file__).resolve().parent.parent


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="LOSSGYM_", extra="ignore")

    # Where things live. Relative paths are taken from the working directory.
    database: Path = Field(Path("var/lossgym.db"), description="SQLite file of the store.")
    data_dir: Path = Field(Path("data"), description="Prepared tokenizer and datasets.")
    runs_dir: Path = Field(Path("runs"), description="One directory per test job.")
    tasks_dir: Path = Field(REPO_ROOT / "tasks", description="Task specs (task.yaml).")

    # HTTP service.
    host: str = "127.0.0.1"
    port: int = 8000
    operator_key: str = Field("", description="Bearer key for operator actions; empty = none.")
    test_wait_s: float = Field(
        900.0, description="Longest a waiting /test call blocks before it returns the job state."
    )
    max_content_bytes: int = Field(64 * 1024, description="Largest edit content accepted.")
    preflight_per_minute: int = Field(
        10, ge=1, description="Pre-flight smoke runs a session may start per minute."
    )
    max_request_bytes: int = Field(256 * 1024, description="Largest request body accepted.")

    # Worker.
    worker_in_api: bool = Field(True, description="Run a worker thread inside `lossgym serve`.")
    worker_poll_s: float = Field(0.5, description="How often an idle worker looks for jobs.")
    lease_s: float = Field(60.0, description="A running job's lease; renewed by heartbeats.")
    gpus: str = Field(
        "",
        description="GPU ids the worker may hand out, e.g. '0,1,2,3'; 'none'; empty: all it sees.",
    )
    warm_start: bool = Field(
        True,
        description="Keep one sandbox started ahead, torch imported, for the next pre-flight "
        "check and the next CPU training run (each is used once; ~1.5 GB idle).",
    )

    # Sandbox: how a test's processes run (SPEC §6).
    runner: Literal["local", "docker", "slurm"] = Field(
        "local",
        description="'local': subprocesses; 'docker': one container per process; 'slurm': one "
        "batch job per process on a Slurm cluster.",
    )
    isolation: Literal["auto", "bwrap", "none"] = Field(
        "auto",
        description="Local runner: 'auto'/'bwrap' sandbox agent code in bubblewrap (auto fails "
        "with the reason where it cannot); 'none' runs it unisolated, an explicit opt-in.",
    )
    sandbox_user: str = Field("65534:65534", description="uid:gid the sandboxed code runs as.")
    docker_image: str = Field("lossgym-trainer", description="Image the Docker runner starts.")
    docker_python: str = Field("python", description="The interpreter inside docker_image.")
    docker_host_python: bool = Field(
        False,
        description="Bind this host's venv, Python and lossgym read-only into a bare image "
        "(CPU tests and development) instead of using the image's own Python.",
    )
    docker_memory: str = Field("32g", description="Memory limit of a container (RAM + swap).")
    docker_shm: str = Field("8g", description="/dev/shm of a container (DataLoader, NCCL).")
    docker_pids: int = Field(4096, description="Most processes and threads in a container.")
    docker_path_map: str = Field(
        "",
        description="'inside=outside,...': how paths of a worker that itself runs in a container "
        "map to the Docker host's, for the bind mounts of the containers it starts.",
    )

    # Slurm runner (`runner: slurm`, SPEC §9; README "Slurm cluster").
    shared_dir: Path | None = Field(
        None,
        description="The filesystem every node mounts at the same path; runs_dir, data_dir and "
        "the Python environment must lie inside it. Unset: not checked.",
    )
    slurm_container: Literal["bwrap", "apptainer", "none"] = Field(
        "bwrap", description="How a job isolates agent code on its node."
    )
    slurm_image: str = Field("", description="Apptainer image (.sif) for the apptainer container.")
    slurm_partition: str = Field("", description="sbatch --partition; empty: the default.")
    slurm_account: str = Field("", description="sbatch --account; empty: none.")
    slurm_qos: str = Field("", description="sbatch --qos; empty: none.")
    slurm_extra: str = Field("", description="More sbatch flags, shell-quoted: '-C h100'.")
    slurm_gpus_per_node: int = Field(8, ge=1, description="GPUs of one node: more is multi-node.")
    slurm_multi_node: bool = Field(
        False,
        description="Allow stages across nodes (srun torchrun); their sandboxes share the nodes' "
        "network, which the rendezvous and NCCL need.",
    )
    slurm_poll_s: float = Field(5.0, gt=0, description="Seconds between two squeue calls.")
    worker_slots: int = Field(
        1, ge=1, description="Tests one worker runs at once; with Slurm, hundreds may queue."
    )

    def resolved(self) -> Settings:
        """A copy with every path made absolute, so subprocesses agree on them."""
        return self.model_copy(
            update={
                "database": self.database.resolve(),
                "data_dir": self.data_dir.resolve(),
                "runs_dir": self.runs_dir.resolve(),
                "tasks_dir": self.tasks_dir.resolve(),
            }
        )
