"""Baselines: edit files applied through the same edit engine agents use.

A baseline file (`tasks/<task>/baselines/<name>.yaml`) is a YAML list of edit
operations in the edit tool's schema, except that `region: <name>` may stand in
for start_line/end_line of a replace: "that whole region, as it currently is".
"""

from __future__ import annotations

from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError, model_validator

from lossgym.env.task import Task, display_path
from lossgym.env.tools import EditArgs, run_edit
from lossgym.env.workspace import Workspace
from lossgym.errors import AgentError, TaskSpecError


class EditOp(BaseModel):
    """One baseline edit: `EditArgs`, plus `region` as a stand-in for a replace's lines."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    op: Literal["replace", "insert", "create"]
    filename: str
    region: str | None = None
    start_line: int | None = None
    end_line: int | None = None
    after_line: int | None = None
    content: str | None = None

    @model_validator(mode="after")
    def _check(self) -> EditOp:
        if self.region is not None:
            if self.op != "replace":
                raise ValueError('region can only be used with op "replace"')
            if self.start_line is not None or self.end_line is not None:
                raise ValueError("give either region or start_line/end_line, not both")
            if self.content is None:
                raise ValueError('op "replace" needs content')
            return self
        try:
            EditArgs.model_validate(self.model_dump(exclude={"region"}))
        except ValidationError as exc:
            raise ValueError(exc.errors()[0]["msg"].removeprefix("Value error, ")) from None
        return self

    def resolve(self, workspace: Workspace) -> EditArgs:
        """The concrete edit: `region` replaced by that region's current line numbers."""
        data = self.model_dump(exclude={"region"})
        if self.region is not None:
            regions = {r.name: r for r in workspace.regions_of(self.filename)}
            if self.region not in regions:
                known = ", ".join(regions) or "none"
                raise AgentError(
                    f"ERROR: {self.filename} has no editable region {self.region!r} "
                    f"(regions: {known})."
                )
            data["start_line"] = regions[self.region].start
            data["end_line"] = regions[self.region].end
        return EditArgs.model_validate(data)


def load_baseline(task: Task, name: str) -> list[EditOp]:
    """The edit operations of baseline `name`; a malformed file raises TaskSpecError."""
    path = task.baseline_file(name)
    where = display_path(path)
    try:
        data: Any = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise TaskSpecError(f"{where}: cannot read: {exc}") from None
    if data is None:
        return []
    if not isinstance(data, list):
        raise TaskSpecError(f"{where}: must be a list of edit operations")
    ops: list[EditOp] = []
    for i, item in enumerate(data):
        try:
            ops.append(EditOp.model_validate(item))
        except ValidationError as exc:
            first = exc.errors()[0]
            loc = ".".join(str(p) for p in (i, *first["loc"]))
            msg = first["msg"].removeprefix("Value error, ")
            raise TaskSpecError(f"{where}: {loc}: {msg}") from None
    return ops


def apply_baseline(workspace: Workspace, ops: list[EditOp]) -> list[str]:
    """Apply the operations in order (regions resolved as they are then); returns the texts."""
    return [run_edit(workspace, op.resolve(workspace)) for op in ops]


def check_baselines(task: Task) -> None:
    """Every baseline applies to a fresh workspace: its regions resolve, its edits succeed."""
    for name in task.spec.baselines:
        try:
            apply_baseline(task.new_workspace(), load_baseline(task, name))
        except AgentError as error:
            where = display_path(task.dir / "task.yaml")
            raise TaskSpecError(f"{where}: baselines.{name}: {error}") from None
