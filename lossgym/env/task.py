"""Tasks: `tasks/<name>/task.yaml` loaded, checked against its files, and rendered.

A task is data only: adding a directory with a `task.yaml`, a description and
baseline edit files adds a task. The schema is `task_spec.py`; the editable
regions' line numbers come from marker lines in the workspace files
(`markers.py`). `load_task` turns every problem into a `TaskSpecError` naming
the file and the dotted key path.
"""

from __future__ import annotations

import importlib.resources
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from lossgym.env import texts
from lossgym.env.markers import MarkerError, named_regions
from lossgym.env.regions import Region
from lossgym.env.task_spec import (  # noqa: F401 - re-exported: importers use lossgym.env.task
    PACKAGE_PREFIX,
    TASK_FILE,
    Budget,
    ModelSpec,
    PrimaryMetric,
    ProfileSpec,
    StageSpec,
    TaskSpec,
    WorkspaceFileSpec,
)
from lossgym.env.workspace import Workspace
from lossgym.errors import AgentError, TaskSpecError

_PLACEHOLDER_RE = re.compile(r"\{([a-z_][a-z0-9_]*)\}")

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
    task = Task(spec, directory, description)
    task.regions()  # the markers are checked now, not when a session starts
    return task


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


def file_regions(
    spec: TaskSpec, directory: Path, files: Mapping[str, str]
) -> dict[str, list[Region]]:
    """The regions of every workspace file, found from its markers (file order)."""
    found: dict[str, list[Region]] = {}
    for i, f in enumerate(spec.workspace):
        try:
            found[f.path] = named_regions(f.path, files[f.path], list(f.editable))
        except MarkerError as error:
            where = display_path(directory / TASK_FILE)
            raise TaskSpecError(f"{where}: workspace.{i}.editable: {error}") from None
    return found


# ── the loaded task ──────────────────────────────────────────────────────────


class Task:
    """A validated task spec plus its directory and description text."""

    def __init__(self, spec: TaskSpec, directory: Path, description_text: str) -> None:
        self.spec = spec
        self.dir = directory
        self.description_text = description_text
        self._files: dict[str, str] | None = None  # read once, like the spec itself
        self._regions: dict[str, list[Region]] | None = None

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
        """The starting text of every workspace file (a copy: callers may change it)."""
        if self._files is None:
            self._files = {f.path: _read_source(self.dir, f.source) for f in self.spec.workspace}
        return dict(self._files)

    def regions(self) -> dict[str, list[Region]]:
        """Each workspace file's editable regions, from the marker lines in its text."""
        if self._regions is None:
            self._regions = file_regions(self.spec, self.dir, self.workspace_files())
        return {path: list(regions) for path, regions in self._regions.items()}

    def new_workspace(self, **limits: Any) -> Workspace:
        """A fresh workspace: the files' text and the regions marked in that text."""
        return Workspace(self.workspace_files(), self.regions(), **limits)

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


def _region_values(task: Task) -> dict[str, str]:
    regions = task.regions()
    editable = [f.path for f in task.spec.workspace if regions[f.path]]
    spans = [f"lines {r.span} (`{r.name}`)" for path in editable for r in regions[path]]
    values = {
        "file": editable[0] if editable else task.spec.workspace[0].path,
        "regions": " and ".join([", ".join(spans[:-1]), spans[-1]] if len(spans) > 1 else spans),
    }
    values.update({f"region_{r.name}": r.span for path in editable for r in regions[path]})
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
    values.update(_region_values(task))
    return values
