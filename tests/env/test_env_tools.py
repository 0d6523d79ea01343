"""Tool schemas (OpenAI and Anthropic shapes), argument validation, dispatch."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from envtest_helpers import REPO, SCRIPT

from lossgym.env.tools import (
    TOOLS,
    EditArgs,
    UndoArgs,
    ViewArgs,
    parse_tool_args,
    run_edit,
    run_undo,
    run_view,
    tool_schemas,
)
from lossgym.env.workspace import Workspace
from lossgym.errors import AgentError

NAMES = ["edit", "test", "submit", "undo", "view"]


def _walk(node: object) -> list[dict]:
    if isinstance(node, dict):
        return [node] + [d for v in node.values() for d in _walk(v)]
    if isinstance(node, list):
        return [d for v in node for d in _walk(v)]
    return []


def test_openai_shape() -> None:
    tools = tool_schemas("openai")
    assert [t["function"]["name"] for t in tools] == NAMES
    for tool in tools:
        assert tool["type"] == "function"
        assert set(tool["function"]) == {"name", "description", "parameters"}
        params = tool["function"]["parameters"]
        assert params["type"] == "object" and params["additionalProperties"] is False
    json.dumps(tools)


def test_anthropic_shape() -> None:
    tools = tool_schemas("anthropic")
    assert [t["name"] for t in tools] == NAMES
    for tool in tools:
        assert set(tool) == {"name", "description", "input_schema"}
        assert tool["input_schema"]["type"] == "object"
    by_name = {t["name"]: t for t in tools}
    assert by_name == {
        t["function"]["name"]: {
            "name": t["function"]["name"],
            "description": t["function"]["description"],
            "input_schema": t["function"]["parameters"],
        }
        for t in tool_schemas("openai")
    }


def test_schema_contents() -> None:
    by_name = {t["name"]: t["input_schema"] for t in tool_schemas("anthropic")}
    edit = by_name["edit"]
    assert edit["required"] == ["op", "filename"]
    assert edit["properties"]["op"]["enum"] == ["replace", "insert", "create"]
    assert edit["properties"]["start_line"] == {
        "type": "integer",
        "description": "replace: first line to replace (1-based, inclusive).",
    }
    assert by_name["test"]["properties"] == {} and by_name["test"]["required"] == []
    assert by_name["submit"]["required"] == ["n"]
    assert by_name["submit"]["properties"]["n"]["minimum"] == 1
    assert by_name["undo"]["properties"]["n"]["default"] == 1
    for node in _walk(by_name):
        assert "title" not in node
        assert {"type": "null"} not in node.get("anyOf", [])
    with pytest.raises(ValueError):
        tool_schemas("gemini")  # type: ignore[arg-type]


def test_descriptions_come_from_docstrings() -> None:
    desc = {t["name"]: t["description"] for t in tool_schemas("anthropic")}
    assert desc["edit"].startswith("Edit a workspace file. Lines are 1-based and inclusive.")
    assert "does not spend the budget" in desc["test"]
    assert "nothing is re-run" in desc["submit"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ({"op": "replace", "filename": SCRIPT, "start_line": 1, "content": "x"}, "end_line"),
        ({"op": "insert", "filename": SCRIPT, "content": "x"}, "missing: after_line"),
        ({"op": "create", "filename": "a.txt"}, 'op "create" needs content'),
        (
            {"op": "insert", "filename": SCRIPT, "after_line": 1, "start_line": 2, "content": "x"},
            'op "insert" does not take start_line',
        ),
        ({"op": "delete", "filename": SCRIPT}, "op: Input should be 'replace'"),
        ({"op": "create", "filename": "a", "content": "x", "mode": 1}, "mode: Extra inputs"),
        ({"op": "replace", "filename": SCRIPT, "start_line": "a"}, "start_line: Input should"),
    ],
)
def test_edit_args_errors(args: dict, message: str) -> None:
    with pytest.raises(AgentError) as info:
        parse_tool_args("edit", args)
    text = str(info.value)
    assert text.startswith("ERROR: Invalid arguments for edit: ")
    assert message in text


def test_other_args() -> None:
    assert parse_tool_args("test", {}) == TOOLS["test"].args()
    assert parse_tool_args("test", None) == TOOLS["test"].args()
    assert parse_tool_args("undo", {}) == UndoArgs(n=1)
    assert parse_tool_args("submit", {"n": 2}).n == 2  # type: ignore[attr-defined]
    with pytest.raises(AgentError, match="greater than or equal to 1"):
        parse_tool_args("submit", {"n": 0})
    with pytest.raises(AgentError, match="Unknown tool 'rm'"):
        parse_tool_args("rm", {})
    with pytest.raises(AgentError, match="must be a JSON object"):
        parse_tool_args("view", ["a"])


def test_dispatch(ws: Workspace) -> None:
    args = parse_tool_args(
        "edit",
        {
            "op": "replace",
            "filename": SCRIPT,
            "start_line": 190,
            "end_line": 190,
            "content": "    return 1",
        },
    )
    assert isinstance(args, EditArgs)
    assert run_edit(ws, args).startswith("OK: Replaced lines 190..190 with 1 line(s)")
    ins = EditArgs(op="insert", filename=SCRIPT, after_line=191, content="y = 2")
    assert run_edit(ws, ins).startswith("OK: Inserted 1 line(s) after line 191")
    new = EditArgs(op="create", filename="notes.txt", content="hi")
    assert run_edit(ws, new).startswith("OK: Created notes.txt with 1 line(s).")
    assert run_view(ws, ViewArgs(filename="notes.txt")).endswith("     1  hi")
    assert run_undo(ws, UndoArgs(n=3)).startswith("OK: Undid 3 edit(s)")


def test_env_and_server_modules_do_not_import_torch() -> None:
    """The API process never imports torch (SPEC §2): not the env modules, nor the app,
    its in-process worker, the sandbox modules the server uses, or GPU discovery.
    `tests/agent_api/test_torch_free.py` checks a live `lossgym serve` end to end."""
    code = (
        "import sys\n"
        "import lossgym.errors, lossgym.env.task, lossgym.env.workspace\n"
        "import lossgym.env.tools, lossgym.env.baselines\n"
        "import lossgym.cli, lossgym.agent_api.app, lossgym.sandbox.worker\n"
        "import lossgym.sandbox.preflight, lossgym.sandbox.stages, lossgym.sandbox.results\n"
        "import lossgym.sandbox.policy, lossgym.sandbox.runner, lossgym.sandbox.local_runner\n"
        "import lossgym.sandbox.docker_runner, lossgym.sandbox.gpus\n"
        "lossgym.sandbox.gpus.configured_gpus('')  # what the worker does as it starts\n"
        "loaded = sorted(m for m in sys.modules if m == 'torch' or m.startswith('torch.'))\n"
        "assert not loaded, f'torch was imported: {loaded[:5]}'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=REPO)


@pytest.mark.parametrize("fmt", ["openai", "anthropic"])
def test_exports_are_json_schema_and_match_the_argument_models(fmt: str) -> None:
    """Each exported schema is a valid JSON Schema whose properties, types, required fields
    and defaults are the argument model's fields; what it accepts the model accepts."""
    from jsonschema import Draft202012Validator
    from jsonschema.exceptions import ValidationError as SchemaError

    for tool in tool_schemas(fmt):  # type: ignore[arg-type]
        name = tool["function"]["name"] if fmt == "openai" else tool["name"]
        schema = tool["function"]["parameters"] if fmt == "openai" else tool["input_schema"]
        Draft202012Validator.check_schema(schema)
        fields = TOOLS[name].args.model_fields
        assert set(schema["properties"]) == set(fields)
        assert set(schema["required"]) == {k for k, f in fields.items() if f.is_required()}
        for key, field in fields.items():
            prop = schema["properties"][key]
            assert prop["description"] == field.description
            if field.default is not None and not field.is_required():
                assert prop["default"] == field.default
            annotation = str(field.annotation)
            if "int" in annotation:
                assert prop["type"] == "integer"
            elif "str" in annotation and "Literal" not in annotation:
                assert prop["type"] == "string"
        validator = Draft202012Validator(schema)
        for sample in _samples(name):
            validator.validate(sample)  # the schema accepts it, and so does the model
            assert parse_tool_args(name, sample) is not None
        for bad in ({"unknown": 1}, {k: [] for k in fields} or {"x": 1}):
            with pytest.raises(SchemaError):
                validator.validate(bad)
            with pytest.raises(AgentError):
                parse_tool_args(name, bad)


def _samples(name: str) -> list[dict]:
    return {
        "edit": [
            {"op": "replace", "filename": SCRIPT, "start_line": 3, "end_line": 4, "content": "x"},
            {"op": "insert", "filename": SCRIPT, "after_line": 0, "content": "x"},
            {"op": "create", "filename": "notes.py", "content": ""},
        ],
        "test": [{}],
        "submit": [{"n": 1}],
        "undo": [{}, {"n": 2}],
        "view": [{"filename": SCRIPT}, {"filename": SCRIPT, "start_line": 1, "end_line": 9}],
    }[name]
