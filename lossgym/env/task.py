"""Task specs: `tasks/<name>/task.yaml` as validated pydantic models.

A task is data only: adding a directory with a `task.yaml`, a description and
baseline edit files adds a task. `load_task` turns every problem into a
`TaskSpecError` naming the file and the dotted key path.
"""

from __future__ import annotations

import importlib.resources
import re
from collections.abc import Mapping
from pathlib import Path, PurePosixPath
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PlainValidator,
    ValidationError,
    field_validator,
    model_validator,
)

from lossgym.env import texts
from lossgym.env.limits import LimitsSpec, PreflightSpec
from lossgym.env.workspace import DASH, Region, Workspace, split_file
from lossgym.errors import AgentError, TaskSpecError

TASK_FILE = "task.yaml"
PACKAGE_PREFIX = "package:"
_NAME = r"^[a-z0-9][a-z0-9_.-]*$"
_IDENT = r"^[A-Za-z_][A-Za-z0-9_]*$"
_PLACEHOLDER_RE = re.compile(r"\{([a-z_][a-z0-9_]*)\}")


def _scalar(value: Any) -> bool | int | float | str:
    if isinstance(value, bool | int | float | str):
        return value
    raise ValueError(f"must be a number, string or boolean, got {type(value).__name__}")


Scalar = Annotated[bool | int | float | str, PlainValidator(_scalar)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _task_relative(value: str) -> str:
    """A path inside the task directory: relative, '/'-separated, no '..'."""
    parts = PurePosixPath(value).parts
    if not value or value.startswith("/") or "\\" in value or ".." in parts:
        raise ValueError(f"must be a relative path inside the task directory, got {value!r}")
    return value


class RegionSpec(_Strict):
    name: Annotated[str, Field(pattern=_IDENT)]
    start: Annotated[int, Field(ge=1)]
    end: Annotated[int, Field(ge=1)]

    @model_validator(mode="after")
    def _ordered(self) -> RegionSpec:
        if self.start > self.end:
            raise ValueError(f"start ({self.start}) must be <= end ({self.end})")
        return self

    def to_region(self) -> Region:
        return Region(self.name, self.start, self.end)


class WorkspaceFileSpec(_Strict):
    path: Annotated[str, Field(pattern=r"^[A-Za-z0-9_.\-]+(/[A-Za-z0-9_.\-]+)*$")]
    source: str
    editable: list[RegionSpec] = []

    @field_validator("path")
    @classmethod
    def _no_dots(cls, value: str) -> str:
        if any(p in (".", "..") for p in value.split("/")):
            raise ValueError("must not contain '.' or '..' components")
        return value

    @field_validator("source")
    @classmethod
    def _source(cls, value: str) -> str:
        if value.startswith(PACKAGE_PREFIX):
            package, _, name = value[len(PACKAGE_PREFIX) :].partition("/")
            if not re.fullmatch(r"[A-Za-z_][\w]*(\.[A-Za-z_]\w*)*", package) or not name:
                raise ValueError("must look like 'package:<dotted.package>/<file>'")
            return value
        return _task_relative(value)

    @model_validator(mode="after")
    def _regions(self) -> WorkspaceFileSpec:
        ordered = sorted(self.editable, key=lambda r: r.start)
        for a, b in zip(ordered, ordered[1:], strict=False):
            if a.end >= b.start:
                raise ValueError(f"editable regions {a.name} and {b.name} overlap")
        names = [r.name for r in self.editable]
        if len(set(names)) != len(names):
            raise ValueError("editable region names must be unique")
        return self


class Budget(_Strict):
    tests: Annotated[int, Field(ge=1)] = 3
    steps: Annotated[int, Field(ge=1)] = 50


class PrimaryMetric(_Strict):
    name: Annotated[str, Field(pattern=_IDENT)]
    direction: Literal["minimize", "maximize"]


class ModelSpec(_Strict):
    n_layer: Annotated[int, Field(gt=0)]
    n_head: Annotated[int, Field(gt=0)]
    n_embd: Annotated[int, Field(gt=0)]
    block_size: Annotated[int, Field(gt=0)]
    vocab_size: Annotated[int, Field(gt=0)]
    bias: bool

    @model_validator(mode="after")
    def _heads(self) -> ModelSpec:
        if self.n_embd % self.n_head:
            raise ValueError(f"n_embd ({self.n_embd}) must be divisible by n_head ({self.n_head})")
        return self


EvalSetName = Literal["wikitext2", "lambada", "arc_easy", "hellaswag", "piqa", "winogrande"]
_TRAIN_ONLY = ("dataset", "model", "val_tokens")


class StageSpec(_Strict):
    label: Annotated[str, Field(pattern=_NAME)]
    kind: Literal["train", "lm-eval"]
    nproc: Annotated[int, Field(ge=1)] = 1
    gpus: Annotated[int, Field(ge=0)] = 0
    time_limit_s: Annotated[float, Field(gt=0)]
    limits: LimitsSpec
    dataset: Annotated[str, Field(pattern=_NAME)] | None = None
    config: dict[Annotated[str, Field(pattern=_IDENT)], Scalar] = {}
    model: ModelSpec | None = None
    val_tokens: Annotated[int, Field(gt=0)] | None = None
    # lm-eval stages only: which sets to score (default: all present) and how many of each.
    evals: Annotated[list[EvalSetName], Field(min_length=1)] | None = None
    limit: Annotated[int, Field(gt=0)] | None = None

    @model_validator(mode="after")
    def _train_needs(self) -> StageSpec:
        if self.kind == "train":
            missing = [k for k in _TRAIN_ONLY if getattr(self, k) is None]
            if missing:
                raise ValueError(f"a train stage needs {', '.join(missing)}")
            extra = [k for k in ("evals", "limit") if getattr(self, k) is not None]
            if extra:
                raise ValueError(f"{', '.join(extra)}: only an lm-eval stage takes this")
        if self.model is not None:
            repeated = sorted(set(self.config) & set(ModelSpec.model_fields))
            if repeated:
                raise ValueError(
                    f"config repeats model fields ({', '.join(repeated)}); set them under "
                    "model only, which both the training run and the evaluator use"
                )
        return self

    def train_config(self) -> dict[str, Scalar]:
        """The training script's knobs: the model's shape, then the stage's config."""
        shape = self.model.model_dump() if self.model is not None else {}
        return {**shape, **self.config}


class ProfileSpec(_Strict):
    description: str
    devices: Literal["cpu", "cuda"]
    stages: Annotated[list[StageSpec], Field(min_length=1)]

    @model_validator(mode="after")
    def _stages(self) -> ProfileSpec:
        labels = [s.label for s in self.stages]
        if len(set(labels)) != len(labels):
            raise ValueError(f"stage labels must be unique, got {labels}")
        if self.stages[0].kind != "train":
            raise ValueError("the first stage must be a train stage")
        for s in self.stages:
            extra = [k for k in (*_TRAIN_ONLY, "config") if s.kind == "lm-eval" and getattr(s, k)]
            if extra:
                raise ValueError(
                    f"stage {s.label}: {', '.join(extra)}: an lm-eval stage takes none (it "
                    "evaluates the preceding train stage's checkpoint with that stage's model)"
                )
            if self.devices == "cpu" and s.gpus:
                raise ValueError(f"stage {s.label}: a cpu profile cannot use gpus")
            if self.devices == "cuda" and s.gpus < 1:
                raise ValueError(f"stage {s.label}: a cuda profile needs gpus >= 1")
        return self

    @property
    def train_stage(self) -> StageSpec:
        return self.stages[0]


class TaskSpec(_Strict):
    name: Annotated[str, Field(pattern=_NAME)]
    title: str
    description: str
    workspace: Annotated[list[WorkspaceFileSpec], Field(min_length=1)]
    budget: Budget = Budget()
    preflight: PreflightSpec = PreflightSpec()
    seeds: Annotated[list[int], Field(min_length=1)]
    hidden_metrics: list[str] = []
    primary_metric: PrimaryMetric
    baselines: dict[Annotated[str, Field(pattern=_IDENT)], str]
    default_profile: str
    profiles: Annotated[
        dict[Annotated[str, Field(pattern=_NAME)], ProfileSpec], Field(min_length=1)
    ]

    @field_validator("description")
    @classmethod
    def _description(cls, value: str) -> str:
        return _task_relative(value)

    @field_validator("baselines")
    @classmethod
    def _baselines(cls, value: dict[str, str]) -> dict[str, str]:
        if "cross_entropy" not in value:
            raise ValueError("must include cross_entropy (the unmodified template)")
        return {k: _task_relative(v) for k, v in value.items()}

    @model_validator(mode="after")
    def _cross_checks(self) -> TaskSpec:
        if self.default_profile not in self.profiles:
            raise ValueError(
                f"default_profile {self.default_profile!r} is not one of the profiles "
                f"({', '.join(self.profiles)})"
            )
        paths = [f.path for f in self.workspace]
        if len(set(paths)) != len(paths):
            raise ValueError("workspace file paths must be unique")
        if len(set(self.seeds)) != len(self.seeds):
            raise ValueError("seeds must be unique")
        return self


# ── loading ──────────────────────────────────────────────────────────────────


def display_path(path: Path) -> str:
    """A path as operators read it: relative to the working directory when possible."""
    try:
        return str(path.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)


def _format_validation(where: str, err: ValidationError) -> str:
    lines = []
    for item in err.errors():
        loc = ".".join(str(p) for p in item["loc"]) or "(top level)"
        msg = item["msg"].removeprefix("Value error, ")
        lines.append(f"{where}: {loc}: {msg}")
    return "\n".join(lines)


def list_tasks(tasks_dir: Path) -> list[str]:
    """Names of the task directories (those holding a task.yaml), sorted."""
    if not tasks_dir.is_dir():
        return []
    return sorted(p.name for p in tasks_dir.iterdir() if (p / TASK_FILE).is_file())


def _read_yaml(path: Path) -> Any:
    try:
        return yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise TaskSpecError(f"{display_path(path)}: cannot read: {exc}") from None


def load_task(tasks_dir: Path, name: str) -> Task:
    """Load and validate `tasks_dir/name/task.yaml`; every problem is a TaskSpecError."""
    available = list_tasks(tasks_dir)
    if name not in available:
        listing = ", ".join(available) or "none"
        raise TaskSpecError(
            f"Unknown task {name!r} in {display_path(tasks_dir)}. Available: {listing}"
        )
    directory = tasks_dir / name
    where = display_path(directory / TASK_FILE)
    data = _read_yaml(directory / TASK_FILE)
    if not isinstance(data, dict):
        raise TaskSpecError(f"{where}: the file must hold a mapping of keys")
    try:
        spec = TaskSpec.model_validate(data)
    except ValidationError as exc:
        raise TaskSpecError(_format_validation(where, exc)) from None
    if spec.name != name:
        raise TaskSpecError(f"{where}: name: {spec.name!r} must match the directory name {name!r}")
    _check_task_files(spec, directory, where)
    description = (directory / spec.description).read_text(encoding="utf-8")
    return Task(spec, directory, description)


def _check_task_files(spec: TaskSpec, directory: Path, where: str) -> None:
    wanted = {"description": spec.description}
    wanted.update({f"baselines.{k}": v for k, v in spec.baselines.items()})
    for i, f in enumerate(spec.workspace):
        if not f.source.startswith(PACKAGE_PREFIX):
            wanted[f"workspace.{i}.source"] = f.source
    for key, rel in wanted.items():
        if not (directory / rel).is_file():
            raise TaskSpecError(
                f"{where}: {key}: file {display_path(directory / rel)} does not exist"
            )


def _read_source(directory: Path, source: str) -> str:
    """The text of a workspace file's source (task-relative path or package resource)."""
    try:
        if source.startswith(PACKAGE_PREFIX):
            package, _, name = source[len(PACKAGE_PREFIX) :].partition("/")
            resource = importlib.resources.files(package).joinpath(*name.split("/"))
            return resource.read_text(encoding="utf-8")
        return (directory / source).read_text(encoding="utf-8")
    except (ImportError, OSError, UnicodeDecodeError, TypeError, ValueError) as exc:
        raise TaskSpecError(
            f"{display_path(directory / TASK_FILE)}: cannot read {source}: {exc}"
        ) from None


# ── the loaded task ──────────────────────────────────────────────────────────


class Task:
    """A validated task spec plus its directory and description text."""

    def __init__(self, spec: TaskSpec, directory: Path, description_text: str) -> None:
        self.spec = spec
        self.dir = directory
        self.description_text = description_text

    @property
    def name(self) -> str:
        return self.spec.name

    def profile(self, name: str | None = None) -> ProfileSpec:
        """The named profile (default: the task's default profile)."""
        key = name or self.spec.default_profile
        if key not in self.spec.profiles:
            known = ", ".join(self.spec.profiles)
            raise AgentError(f"ERROR: Unknown profile {key!r} for task {self.name}. Use: {known}.")
        return self.spec.profiles[key]

    def workspace_files(self) -> dict[str, str]:
        return {f.path: _read_source(self.dir, f.source) for f in self.spec.workspace}

    def regions(self) -> dict[str, list[Region]]:
        return {f.path: [r.to_region() for r in f.editable] for f in self.spec.workspace}

    def new_workspace(self, **limits: Any) -> Workspace:
        """A fresh workspace; regions are checked against the files' real lengths."""
        files = self.workspace_files()
        for i, f in enumerate(self.spec.workspace):
            n_lines = len(split_file(files[f.path]))
            for j, r in enumerate(f.editable):
                if r.end > n_lines:
                    raise TaskSpecError(
                        f"{display_path(self.dir / TASK_FILE)}: workspace.{i}.editable.{j}: region "
                        f"{r.name} ends at line {r.end} but {f.path} has {n_lines} lines"
                    )
        return Workspace(files, self.regions(), **limits)

    def primary_metric_key(self, profile: str | None = None) -> str:
        """`<primary metric>_<label of the first train stage>`, e.g. `val_loss_gpt-tiny`."""
        return f"{self.spec.primary_metric.name}_{self.profile(profile).train_stage.label}"

    def is_hidden(self, metric_key: str) -> bool:
        return texts.is_hidden(metric_key, self.spec.hidden_metrics)

    def baseline_file(self, name: str) -> Path:
        if name not in self.spec.baselines:
            known = ", ".join(self.spec.baselines)
            raise AgentError(
                f"ERROR: Unknown baseline {name!r} for task {self.name}. Use: {known}."
            )
        return self.dir / self.spec.baselines[name]

    def description_values(self, profile: str | None = None) -> dict[str, str]:
        return _description_values(self, profile)

    def render_description(self, profile: str | None = None) -> str:
        """The description with `{placeholder}`s filled in for `profile`."""
        values = self.description_values(profile)

        def fill(match: re.Match[str]) -> str:
            key = match.group(1)
            if key not in values:
                raise TaskSpecError(
                    f"{display_path(self.dir / self.spec.description)}: unknown placeholder "
                    f"{{{key}}}; known: {', '.join(sorted(values))}"
                )
            return values[key]

        return _PLACEHOLDER_RE.sub(fill, self.description_text)


def _devices_text(profile: ProfileSpec) -> str:
    stage = profile.train_stage
    if profile.devices == "cpu":
        procs = f"{stage.nproc} DDP processes" if stage.nproc > 1 else "1 process"
        return f"CPU, {procs}"
    ddp = f", {stage.nproc}-process DDP" if stage.nproc > 1 else ""
    return f"{stage.gpus} GPU{'s' if stage.gpus > 1 else ''}{ddp}"


def _region_values(spec: TaskSpec) -> dict[str, str]:
    editable = [f for f in spec.workspace if f.editable]
    spans = [f"lines {r.start}{DASH}{r.end} (`{r.name}`)" for f in editable for r in f.editable]
    values = {
        "file": editable[0].path if editable else spec.workspace[0].path,
        "regions": " and ".join([", ".join(spans[:-1]), spans[-1]] if len(spans) > 1 else spans),
    }
    for f in editable:
        for r in f.editable:
            values[f"region_{r.name}"] = f"{r.start}{DASH}{r.end}"
    return values


def _description_values(task: Task, profile_name: str | None) -> dict[str, str]:
    spec, profile = task.spec, task.profile(profile_name)
    stage = profile.train_stage
    model: Mapping[str, Any] = stage.model.model_dump() if stage.model else {}
    values = {
        "title": spec.title,
        "task": spec.name,
        "profile": profile_name or spec.default_profile,
        "profile_description": profile.description,
        "devices": _devices_text(profile),
        "dataset": str(stage.dataset),
        "train_label": stage.label,
        "time_limit": f"{stage.time_limit_s:g} s",
        "val_tokens": f"{stage.val_tokens:,}" if stage.val_tokens else "",
        "train_config": ", ".join(f"{k}={v}" for k, v in stage.config.items()),
        "stages": ", ".join(f"{s.label} ({s.kind})" for s in profile.stages),
        "metric": task.primary_metric_key(profile_name),
        "metric_direction": "lower is better"
        if spec.primary_metric.direction == "minimize"
        else "higher is better",
        "tests": str(spec.budget.tests),
        "steps": str(spec.budget.steps),
        "model": (
            f"{model['n_layer']}L/{model['n_head']}H/{model['n_embd']}D, "
            f"block {model['block_size']}, vocab {model['vocab_size']}"
            if model
            else ""
        ),
    }
    values.update({k: str(v) for k, v in model.items()})
    values.update(_region_values(spec))
    return values
