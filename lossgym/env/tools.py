"""The agent's tools, defined once: the `TOOLS` table of typed argument models.

Each model's docstring is the tool description and its field descriptions are
the parameter docs; `tool_schemas` exports them in OpenAI and Anthropic shapes.
`parse_tool_args` turns raw arguments into a model (or an `AgentError`), and
`run_edit` / `run_view` / `run_undo` apply the workspace tools. Every transport
(HTTP routes, /tools/call, MCP) dispatches through `EpisodeService.call`.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from lossgym.env.workspace import Workspace
from lossgym.errors import AgentError

_LINE_FIELDS = ("start_line", "end_line", "after_line")
_NEEDS: dict[str, tuple[str, ...]] = {
    "replace": ("start_line", "end_line", "content"),
    "insert": ("after_line", "content"),
    "create": ("content",),
}


class _Args(BaseModel):
    model_config = ConfigDict(extra="forbid")


class EditArgs(_Args):
    """Edit a workspace file. Lines are 1-based and inclusive.

    op="replace": replace lines start_line..end_line with content. Every line of the
    range must lie inside ONE editable region. op="insert": insert content after
    after_line (0 = at the top), inside or at the edge of an editable region; the new
    lines join that region. op="create": create a new file whose lines are all editable.
    After a replace or insert, the edited region grows or shrinks and every later
    region shifts by the change in line count; the reply shows the new ranges and the
    edited region with 3 lines of context (editable lines have no "|"). Edits are free
    (they cost a step, not a test) and can be reverted with undo.
    """

    op: Literal["replace", "insert", "create"] = Field(
        description='"replace" (needs start_line, end_line, content), '
        '"insert" (needs after_line, content) or "create" (needs content).'
    )
    filename: str = Field(
        description="Workspace-relative path of the file, e.g. nanoGPT/custom_pretrain.py."
    )
    start_line: int | None = Field(
        default=None, description="replace: first line to replace (1-based, inclusive)."
    )
    end_line: int | None = Field(
        default=None, description="replace: last line to replace (1-based, inclusive)."
    )
    after_line: int | None = Field(
        default=None, description="insert: the new lines go after this line (0 = before line 1)."
    )
    content: str | None = Field(
        default=None,
        description="The new source text. Lines are split like Python's str.splitlines(); "
        "end with an extra newline to keep a blank last line. In a replace, empty content "
        "deletes the lines.",
    )

    @model_validator(mode="after")
    def _op_fields(self) -> EditArgs:
        needs = _NEEDS[self.op]
        missing = [k for k in needs if getattr(self, k) is None]
        if missing:
            raise ValueError(
                f'op "{self.op}" needs {", ".join(needs)}; missing: {", ".join(missing)}'
            )
        extra = [k for k in _LINE_FIELDS if k not in needs and getattr(self, k) is not None]
        if extra:
            raise ValueError(
                f'op "{self.op}" does not take {", ".join(extra)}; '
                f"give only {', '.join(needs)} with filename"
            )
        return self


class TestArgs(_Args):
    """Run a test: train the model on the current workspace and report its metrics.

    A free pre-flight check runs first; code that fails it is reported with the line
    number and does not spend the budget. Otherwise one test of the budget is spent,
    whatever the outcome. The reply gives the last training-progress lines and the
    final metrics from the trusted evaluator.
    """

    __test__ = False  # not a pytest test class


class SubmitArgs(_Args):
    """Submit the result of an earlier test as final; nothing is re-run. Ends the session."""

    n: int = Field(ge=1, description="The number of the test to submit (as in [Test #n]).")


class UndoArgs(_Args):
    """Revert the last n edits (file contents and editable ranges). Costs a step, not a test."""

    n: int = Field(default=1, ge=1, description="How many edits to revert (default 1).")


class ViewArgs(_Args):
    """Show a workspace file, or lines start_line..end_line of it, with line numbers.

    Read-only lines are shown as "  185| text", editable ones as "  188  text"; the header
    gives the editable ranges and the file's length. Costs a step, not a test.
    """

    filename: str = Field(
        description="Workspace-relative path of the file, e.g. nanoGPT/custom_pretrain.py."
    )
    start_line: int | None = Field(default=None, description="First line to show (default 1).")
    end_line: int | None = Field(
        default=None, description="Last line to show (default: the end of the file)."
    )


@dataclass(frozen=True)
class Tool:
    """One agent tool: its name and typed arguments, whose docstrings are the schema.

    The episode service runs a tool through its method of the same name; `waits`
    marks the tool that runs a job, which HTTP callers may ask not to wait for.
    """

    name: str
    args: type[_Args]
    waits: bool = False


# The one table of tools: schemas, argument parsing, the HTTP routes, /tools/call
# and the MCP endpoint are all built from it.
TOOLS: dict[str, Tool] = {
    tool.name: tool
    for tool in (
        Tool("edit", EditArgs),
        Tool("test", TestArgs, waits=True),
        Tool("submit", SubmitArgs),
        Tool("undo", UndoArgs),
        Tool("view", ViewArgs),
    )
}


def _clean(node: Any) -> Any:
    """Drop pydantic's titles and null-defaults; `X | None` becomes plain X (optional)."""
    if isinstance(node, list):
        return [_clean(v) for v in node]
    if not isinstance(node, dict):
        return node
    out = {k: _clean(v) for k, v in node.items() if k != "title"}
    options = out.get("anyOf")
    if isinstance(options, list) and {"type": "null"} in options:
        rest = [o for o in options if o != {"type": "null"}]
        del out["anyOf"]
        out.update(rest[0] if len(rest) == 1 else {"anyOf": rest})
    if "default" in out and out["default"] is None:
        del out["default"]
    return out


def tool_parameters(name: str) -> dict[str, Any]:
    """The JSON schema of one tool's arguments."""
    schema = _clean(TOOLS[name].args.model_json_schema())
    schema.setdefault("properties", {})
    schema.setdefault("required", [])
    return schema


def tool_description(name: str) -> str:
    return inspect.cleandoc(TOOLS[name].args.__doc__ or name)


def tool_schemas(fmt: Literal["openai", "anthropic"] = "openai") -> list[dict[str, Any]]:
    """Every tool's schema, as OpenAI `tools=[...]` entries or Anthropic tool definitions."""
    if fmt not in ("openai", "anthropic"):
        raise ValueError(f"unknown tool schema format {fmt!r}; use 'openai' or 'anthropic'")
    out: list[dict[str, Any]] = []
    for name in TOOLS:
        desc, params = tool_description(name), tool_parameters(name)
        if fmt == "openai":
            fn = {"name": name, "description": desc, "parameters": params}
            out.append({"type": "function", "function": fn})
        else:
            out.append({"name": name, "description": desc, "input_schema": params})
    return out


def _validation_text(name: str, err: ValidationError) -> str:
    parts = []
    for item in err.errors():
        loc = ".".join(str(p) for p in item["loc"])
        msg = item["msg"].removeprefix("Value error, ")
        parts.append(f"{loc}: {msg}" if loc else msg)
    return f"ERROR: Invalid arguments for {name}: {'; '.join(parts)}."


def parse_tool_args(name: str, arguments: Any) -> _Args:
    """Validate a tool call's arguments (parsed ones pass through); bad input is an AgentError."""
    if name not in TOOLS:
        raise AgentError(f"ERROR: Unknown tool {name!r}. Tools: {', '.join(TOOLS)}.")
    if isinstance(arguments, TOOLS[name].args):
        return arguments
    if arguments is None:
        arguments = {}
    if not isinstance(arguments, dict):
        raise AgentError(f"ERROR: Arguments for {name} must be a JSON object.")
    try:
        return TOOLS[name].args.model_validate(arguments)
    except ValidationError as exc:
        raise AgentError(_validation_text(name, exc)) from None


def run_edit(workspace: Workspace, args: EditArgs) -> str:
    """Apply one edit through the workspace engine and return the agent's text."""
    if args.op == "replace":
        assert args.start_line is not None and args.end_line is not None
        return workspace.replace(args.filename, args.start_line, args.end_line, args.content or "")
    if args.op == "insert":
        assert args.after_line is not None
        return workspace.insert(args.filename, args.after_line, args.content or "")
    return workspace.create(args.filename, args.content or "")


def run_view(workspace: Workspace, args: ViewArgs) -> str:
    return workspace.view(args.filename, args.start_line, args.end_line)


def run_undo(workspace: Workspace, args: UndoArgs) -> str:
    return workspace.undo(args.n)
