"""Task specs: the real task validates; bad specs name the file and key; template regions."""

from __future__ import annotations

import ast
import re
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from envtest_helpers import SCRIPT, TASK, TASKS_DIR, needs_template

from lossgym.env.limits import parse_size
from lossgym.env.regions import Region
from lossgym.env.task import Task, list_tasks, load_task
from lossgym.errors import AgentError, TaskSpecError


@pytest.fixture
def task() -> Task:
    return load_task(TASKS_DIR, TASK)


def test_real_task_validates(task: Task) -> None:
    spec = task.spec
    assert spec.title == "LLM Pretraining: Loss Function Optimization"
    assert (spec.budget.tests, spec.budget.steps) == (3, 50)
    assert spec.seeds == [1337, 1338, 1339, 1340, 1341]
    assert spec.hidden_metrics == ["piqa_*", "winogrande_*"]
    assert set(spec.baselines) == {"cross_entropy", "label_smoothing", "softcap_ce", "z_loss"}
    assert spec.default_profile == "tiny-cpu"
    stage = task.profile().stages[0]
    assert (stage.label, stage.kind, stage.nproc, stage.dataset) == (
        "gpt-tiny",
        "train",
        2,
        "shakespeare",
    )
    assert stage.model is not None and stage.model.n_embd == 128
    assert task.primary_metric_key() == "val_loss_gpt-tiny"
    assert task.is_hidden("piqa_lm-eval-tiny") and not task.is_hidden("val_loss_gpt-tiny")
    assert [r.name for r in task.regions()[SCRIPT]] == ["compute_loss", "loss_state_hook"]
    assert list_tasks(TASKS_DIR) == [TASK] or TASK in list_tasks(TASKS_DIR)


def test_description_renders(task: Task) -> None:
    text = task.render_description()
    assert text.startswith("LLM Pretraining: Loss Function Optimization\n")
    assert not re.search(r"\{[a-z_]+\}", text), "unfilled placeholder"
    regions = task.regions()[SCRIPT]
    for r in regions:
        assert f"lines {r.start}–{r.end} (`{r.name}`)" in text
    assert "compute_loss(logits, targets)" in text and "loss_progress" in text
    assert "before the forward pass" in text and "no handle on the optimizer" in text
    assert "loss = compute_loss(logits, y)" in text and "BEGIN EDITABLE REGION" in text
    assert "plain cross-entropy" in text and "lower is better" in text
    assert "You have 3 tests" in text and "submit(n=N)" in text
    with pytest.raises(AgentError, match="Unknown profile 'huge'"):
        task.render_description("huge")


def test_unknown_task_lists_available() -> None:
    with pytest.raises(TaskSpecError, match=f"Unknown task 'nope'.*Available: .*{TASK}"):
        load_task(TASKS_DIR, "nope")


# ── broken copies of the real task ─────────────────────────────────────────


def _broken(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, edit: Callable[[dict], Any]) -> str:
    shutil.copytree(TASKS_DIR / TASK, tmp_path / "tasks" / TASK)
    path = tmp_path / "tasks" / TASK / "task.yaml"
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    edit(data)
    path.write_text(yaml.safe_dump(data, allow_unicode=True), encoding="utf-8")
    monkeypatch.chdir(tmp_path)
    with pytest.raises(TaskSpecError) as info:
        load_task(Path("tasks"), TASK)
    return str(info.value)


def _stage(data: dict) -> dict:
    return data["profiles"]["tiny-cpu"]["stages"][0]


WHERE = f"tasks/{TASK}/task.yaml"
BROKEN: dict[str, tuple[Callable[[dict], Any], str]] = {
    "unknown_top": (lambda d: d.update(colour="red"), "colour: Extra inputs are not permitted"),
    "unknown_nested": (
        lambda d: _stage(d).update(gpu_type="h100"),
        "profiles.tiny-cpu.stages.0.gpu_type: Extra inputs are not permitted",
    ),
    "bad_nproc": (
        lambda d: _stage(d).update(nproc=0),
        "profiles.tiny-cpu.stages.0.nproc: Input should be greater than or equal to 1",
    ),
    "bad_time": (lambda d: _stage(d).update(time_limit_s=0), "stages.0.time_limit_s: Input"),
    "no_limits": (lambda d: _stage(d).pop("limits"), "stages.0.limits: Field required"),
    "bad_memory": (
        lambda d: _stage(d).update(limits={"memory": "lots", "cpus": 1, "pids": 64}),
        "stages.0.limits.memory: must be a size such as 4GiB or 512MiB, got 'lots'",
    ),
    "zero_cpus": (
        lambda d: _stage(d).update(limits={"memory": "1GiB", "cpus": 0, "pids": 64}),
        "stages.0.limits.cpus: Input should be greater than 0",
    ),
    "heads": (
        lambda d: _stage(d)["model"].update(n_head=3),
        "profiles.tiny-cpu.stages.0.model: n_embd (128) must be divisible by n_head (3)",
    ),
    "repeated_region": (
        lambda d: d["workspace"][0]["editable"].append("compute_loss"),
        "workspace.0.editable: editable region names must be unique (compute_loss repeats)",
    ),
    "region_without_markers": (
        lambda d: d["workspace"][0]["editable"].append("schedule"),
        f"workspace.0.editable: {SCRIPT}: no markers for region schedule; mark it with "
        "'# ── BEGIN EDITABLE REGION schedule ──' and '# ── END EDITABLE REGION schedule ──'",
    ),
    "marked_but_not_listed": (
        lambda d: d["workspace"][0]["editable"].remove("loss_state_hook"),
        f"{SCRIPT}: region loss_state_hook is marked in the file but not listed under editable",
    ),
    "line_numbers_given": (  # the old shape of task.yaml
        lambda d: d["workspace"][0].update(editable=[{"name": "x", "start": 1, "end": 400}]),
        "workspace.0.editable: list the regions by name only, e.g. [compute_loss]",
    ),
    "bad_region_name": (
        lambda d: d["workspace"][0].update(editable=["compute-loss"]),
        "workspace.0.editable.0: String should match pattern",
    ),
    "default_profile": (lambda d: d.update(default_profile="big"), "default_profile 'big'"),
    "first_stage": (lambda d: _stage(d).update(kind="lm-eval"), "first stage must be a train"),
    "dup_labels": (
        lambda d: d["profiles"]["tiny-cpu"]["stages"].append(dict(_stage(d))),
        "stage labels must be unique",
    ),
    "no_ce_baseline": (lambda d: d["baselines"].pop("cross_entropy"), "must include cross_entropy"),
    "direction": (lambda d: d["primary_metric"].update(direction="up"), "primary_metric.direction"),
    "config_value": (lambda d: _stage(d)["config"].update(lr=[1]), "stages.0.config.lr"),
    "name": (lambda d: d.update(name="other"), "must match the directory name"),
    "missing_file": (
        lambda d: d["baselines"].update(z_loss="baselines/nope.yaml"),
        "baselines.z_loss",
    ),
    "escaping_path": (lambda d: d.update(description="../x.md"), "description: "),
    "cpu_gpus": (lambda d: _stage(d).update(gpus=1), "a cpu profile cannot use gpus"),
}


@pytest.mark.parametrize("case", sorted(BROKEN))
def test_broken_spec_names_file_and_key(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, case: str
) -> None:
    edit, expected = BROKEN[case]
    message = _broken(tmp_path, monkeypatch, edit)
    assert message.startswith(f"{WHERE}: "), message
    assert expected in message, message


def test_nproc_message_exact(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    message = _broken(tmp_path, monkeypatch, lambda d: _stage(d).update(nproc=0))
    assert message == (
        f"{WHERE}: profiles.tiny-cpu.stages.0.nproc: Input should be greater than or equal to 1"
    )


def test_yaml_syntax_error(tmp_path: Path) -> None:
    (tmp_path / "t").mkdir()
    (tmp_path / "t" / "task.yaml").write_text("name: [unclosed\n")
    with pytest.raises(TaskSpecError, match="task.yaml: cannot read"):
        load_task(tmp_path, "t")


# ── a second task, added as a directory only ───────────────────────────────

TOY = {
    "name": "toy",
    "title": "Toy",
    "description": "description.md",
    "workspace": [
        {"path": "src/main.txt", "source": "files/main.txt", "editable": ["body"]},
        {"path": "src/notes.txt", "source": "files/notes.txt"},
    ],
    "seeds": [1],
    "primary_metric": {"name": "val_loss", "direction": "minimize"},
    "baselines": {"cross_entropy": "baselines/ce.yaml"},
    "default_profile": "p",
    "profiles": {
        "p": {
            "description": "d",
            "devices": "cuda",
            "stages": [
                {
                    "label": "small",
                    "kind": "train",
                    "nproc": 1,
                    "gpus": 1,
                    "time_limit_s": 5,
                    "limits": {"memory": "1GiB", "cpus": 1, "pids": 64},
                    "dataset": "d",
                    "val_tokens": 8,
                    "model": {
                        "n_layer": 1,
                        "n_head": 1,
                        "n_embd": 8,
                        "block_size": 8,
                        "vocab_size": 16,
                        "bias": True,
                    },
                },
                {
                    "label": "eval",
                    "kind": "lm-eval",
                    "gpus": 1,
                    "time_limit_s": 5,
                    "limits": {"memory": 1073741824, "cpus": 0.5, "pids": 16},
                },
            ],
        }
    },
}


# Lines 2-3 are the editable region `body`, between its two marker lines.
TOY_MAIN = "a\n# ── BEGIN EDITABLE REGION body ──\nb\nc\n# ── END EDITABLE REGION body ──\nd\n"


def _write_toy(root: Path, spec: dict, main: str = TOY_MAIN) -> None:
    (root / "toy" / "files").mkdir(parents=True)
    (root / "toy" / "baselines").mkdir()
    (root / "toy" / "task.yaml").write_text(yaml.safe_dump(spec))
    (root / "toy" / "description.md").write_text("{title}: edit {regions} of {file} on {devices}.")
    (root / "toy" / "files" / "main.txt").write_text(main)
    (root / "toy" / "files" / "notes.txt").write_text("n\n")
    (root / "toy" / "baselines" / "ce.yaml").write_text("[]\n")


def test_second_task_by_directory(tmp_path: Path) -> None:
    _write_toy(tmp_path, TOY)
    shutil.copytree(TASKS_DIR / TASK, tmp_path / TASK)
    assert list_tasks(tmp_path) == sorted([TASK, "toy"])
    toy = load_task(tmp_path, "toy")
    assert toy.render_description() == "Toy: edit lines 3–4 (`body`) of src/main.txt on 1 GPU."
    assert toy.primary_metric_key() == "val_loss_small"
    ws = toy.new_workspace()
    assert ws.regions_of("src/notes.txt") == []
    assert ws.replace("src/main.txt", 3, 4, "B").startswith("OK: Replaced lines 3..4")
    with pytest.raises(AgentError, match="outside the editable ranges"):  # a marker line
        ws.replace("src/main.txt", 2, 3, "B")


BEGIN, END = "# ── BEGIN EDITABLE REGION body ──", "# ── END EDITABLE REGION body ──"
BAD_MARKERS: dict[str, tuple[str, str]] = {
    # The old bug: a region running past the end of the file. Its END marker is missing.
    "past_the_end": (f"a\n{BEGIN}\nb\nc\n", f"line 2: region body is never closed; add '{END}'"),
    "missing": ("a\nb\n", "src/main.txt: no markers for region body; mark it with"),
    "empty": (f"a\n{BEGIN}\n{END}\nb\n", "lines 2-3: region body is empty"),
    "duplicated": (
        f"{BEGIN}\nb\n{END}\n{BEGIN}\nc\n{END}\n",
        "line 4: region body is marked twice (it already begins at line 1)",
    ),
    "end_first": (f"{END}\nb\n{BEGIN}\nc\n", f"line 1: '{END}' has no matching '{BEGIN}'"),
    "overlap": (
        f"{BEGIN}\n# ── BEGIN EDITABLE REGION other ──\nb\n{END}\n",
        "line 2: region other begins inside region body (begun at line 1)",
    ),
    "crossed": (
        f"{BEGIN}\nb\n# ── END EDITABLE REGION other ──\n",
        "line 3: '# ── END EDITABLE REGION other ──' has no matching "
        "'# ── BEGIN EDITABLE REGION other ──' before it (region body is open)",
    ),
    "malformed": (
        f"{BEGIN}\nb\n# END EDITABLE REGION: body\n",
        "line 3: malformed region marker '# END EDITABLE REGION: body'",
    ),
}


@pytest.mark.parametrize("case", sorted(BAD_MARKERS))
def test_bad_markers_are_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, case: str
) -> None:
    main, expected = BAD_MARKERS[case]
    _write_toy(tmp_path, TOY, main)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(TaskSpecError) as info:
        load_task(Path("."), "toy")
    message = str(info.value)
    assert message.startswith("toy/task.yaml: workspace.0.editable: src/main.txt"), message
    assert expected in message, message


def test_indented_and_padded_markers(tmp_path: Path) -> None:
    main = "def f():\n    # ── BEGIN EDITABLE REGION body ──\n    x = 1\n    " + END + "─────\n"
    _write_toy(tmp_path, TOY, main)
    assert load_task(tmp_path, "toy").regions()["src/main.txt"] == [Region("body", 3, 3)]


def test_validate_command_reports_bad_markers(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`lossgym tasks validate` loads the task (markers included) and applies its baselines."""
    from typer.testing import CliRunner

    from lossgym.cli import app

    _write_toy(tmp_path, TOY, f"a\n{BEGIN}\nb\n")
    monkeypatch.setenv("LOSSGYM_TASKS_DIR", str(tmp_path))
    bad = CliRunner().invoke(app, ["tasks", "validate", "toy"])
    assert bad.exit_code == 1
    assert "workspace.0.editable: src/main.txt line 2: region body is never closed" in bad.output
    (tmp_path / "toy" / "files" / "main.txt").write_text(TOY_MAIN)
    (tmp_path / "toy" / "baselines" / "ce.yaml").write_text(
        "- {op: replace, filename: src/main.txt, start_line: 1, end_line: 1, content: x}\n"
    )
    bad = CliRunner().invoke(app, ["tasks", "validate", "toy"])
    assert bad.exit_code == 1 and "baselines.cross_entropy: ERROR:" in bad.output, bad.output
    monkeypatch.setenv("LOSSGYM_TASKS_DIR", str(TASKS_DIR))
    good = CliRunner().invoke(app, ["tasks", "validate", TASK])
    assert good.exit_code == 0 and good.output.endswith(f"\n{TASK}: OK\n"), good.output
    assert f"{SCRIPT}: compute_loss lines " in good.output


def test_unknown_placeholder(tmp_path: Path) -> None:
    _write_toy(tmp_path, TOY)
    (tmp_path / "toy" / "description.md").write_text("{nonsense} but {'a': 1} stays")
    with pytest.raises(TaskSpecError, match=r"unknown placeholder \{nonsense\}"):
        load_task(tmp_path, "toy").render_description()


# ── the real template ───────────────────────────────────────────────────────


@needs_template
def test_regions_match_template_markers(task: Task) -> None:
    text = task.workspace_files()[SCRIPT]
    lines = text.splitlines()
    loss, hook = task.regions()[SCRIPT]
    assert (loss.name, hook.name) == ("compute_loss", "loss_state_hook")
    func = next(
        n
        for n in ast.parse(text).body
        if isinstance(n, ast.FunctionDef) and n.name == "compute_loss"
    )
    assert (func.lineno, func.end_lineno) == (loss.start, loss.end)
    for region in (loss, hook):
        assert lines[region.start - 2].strip() == f"# ── BEGIN EDITABLE REGION {region.name} ──"
        assert lines[region.end].strip() == f"# ── END EDITABLE REGION {region.name} ──"
    assert hook.end - hook.start + 1 == 3, "the loss-state hook is a 3-line region"
    task.new_workspace()  # regions lie inside the file


@pytest.mark.parametrize(
    ("text", "size"),
    [("4GiB", 4 * 2**30), ("512MiB", 512 * 2**20), ("6g", 6 * 2**30), ("1.5GiB", 3 * 2**29),
     (1024, 1024), ("100", 100)],
)  # fmt: skip
def test_sizes_are_binary_units(text: object, size: int) -> None:
    assert parse_size(text) == size


@pytest.mark.parametrize("bad", ["", "lots", "-1GiB", "4 PiB", 0, True, "0MiB"])
def test_a_bad_size_is_refused(bad: object) -> None:
    with pytest.raises(ValueError, match="size|positive"):
        parse_size(bad)
