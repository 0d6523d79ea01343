"""The training template under real torchrun (2 gloo processes) on the embedded data."""

from __future__ import annotations

import ast
import json
import re

import pytest
import torch
from safetensors.torch import load_file
from trainertest_helpers import (
    TEMPLATE,
    TINY_MODEL,
    TINY_TRAIN,
    make_workspace,
    reference_val_loss,
    run_evaluator,
    run_training,
    train_metrics,
)

from lossgym.trainer.model import GPT, GPTConfig, checkpoint_keys, load_checkpoint
from lossgym.trainer.shards import read_shard


def _config(tmp_path, data_dir, **over) -> tuple:
    out = tmp_path / "out"
    cfg = {**TINY_TRAIN, "data_dir": str(data_dir), "out_dir": str(out), **over}
    path = tmp_path / "config.json"
    path.write_text(json.dumps(cfg))
    return path, out


@pytest.fixture(scope="module")
def ddp_run(tmp_path_factory, train_view):
    tmp = tmp_path_factory.mktemp("ddp")
    ws = make_workspace(tmp)
    cfg, out = _config(tmp, train_view)
    proc = run_training(ws, cfg, nproc=2)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc, out, tmp


def test_train_metrics_lines(ddp_run):
    proc, _, _ = ddp_run
    metrics = train_metrics(proc.stdout)
    assert [m[0] for m in metrics] == [2, 4]
    for _, train_loss, val_loss in metrics:
        assert 5.0 < train_loss < 12.0 and 5.0 < val_loss < 12.0
    # rank 0 only prints: one line per eval step, exact format with 4 decimals
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("TRAIN_METRICS")]
    assert len(lines) == 2
    assert all(
        re.fullmatch(
            r"TRAIN_METRICS: step=\d+, train_loss=\d+\.\d{4}, "
            r"val_loss=\d+\.\d{4}",
            ln,
        )
        for ln in lines
    )
    assert "world size 2" in proc.stdout
    assert re.search(r"^iter 4: loss \d+\.\d{4}, .*ms/iter, \d+ tok/s$", proc.stdout, re.M)
    assert re.search(r"^done: 4 iters in .*s monitor eval\), \d+ tok/s$", proc.stdout, re.M)


def test_checkpoint_loads_into_pristine_model(ddp_run):
    _, out, _ = ddp_run
    ckpt = out / "model.safetensors"
    state = load_file(ckpt)
    expected = checkpoint_keys(GPT(GPTConfig(**TINY_MODEL)))
    assert {k: tuple(v.shape) for k, v in state.items()} == expected
    assert all(v.dtype == torch.float32 for v in state.values())
    model = load_checkpoint(ckpt, GPTConfig(**TINY_MODEL))
    assert model.lm_head.weight is model.transformer.wte.weight


def test_same_seed_same_metrics(ddp_run, train_view):
    proc, _, tmp = ddp_run
    again_dir = tmp / "again"
    again_dir.mkdir()
    cfg, _ = _config(again_dir, train_view)
    again = run_training(make_workspace(again_dir), cfg, nproc=2)
    assert again.returncode == 0, again.stderr[-3000:]
    assert train_metrics(again.stdout) == train_metrics(proc.stdout)


def test_unknown_config_key(tmp_path, train_view):
    cfg, _ = _config(tmp_path, train_view, learning_rat=1e-3)
    proc = run_training(make_workspace(tmp_path), cfg, nproc=None)
    assert proc.returncode != 0
    assert "config error: unknown key 'learning_rat'" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_wrongly_typed_config_value(tmp_path, train_view):
    cfg, _ = _config(tmp_path, train_view, max_iters=4.5)
    proc = run_training(make_workspace(tmp_path), cfg, nproc=None)
    assert proc.returncode != 0
    assert "config error: max_iters must be int, got float 4.5" in proc.stderr


CE_LINE = (
    "    return F.cross_entropy(logits.view(-1, logits.size(-1)), targets.view(-1), "
    "ignore_index=-1)\n"
)
CHEAT = (
    "    if not torch.is_grad_enabled():\n"
    "        return logits.sum() * 0.0  # pretend to be perfect whenever evaluated\n" + CE_LINE
)


def test_evaluator_ignores_compute_loss(tmp_path, train_view, shakespeare_dir):
    """SPEC 12.1: a compute_loss that returns 0 outside training changes nothing
    the evaluator (or the monitor loss) reports."""
    text = TEMPLATE.read_text()
    assert text.count(CE_LINE) == 1
    ws = make_workspace(tmp_path, text.replace(CE_LINE, CHEAT))
    cfg, out = _config(tmp_path, train_view)
    proc = run_training(ws, cfg, nproc=None)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert all(val > 5.0 for _, _, val in train_metrics(proc.stdout))

    (tmp_path / "model.json").write_text(json.dumps(TINY_MODEL))
    n = 500
    ev = run_evaluator(
        "--checkpoint", str(out / "model.safetensors"),
        "--model-config", str(tmp_path / "model.json"),
        "--data-dir", str(shakespeare_dir),
        "--label", "tiny", "--val-tokens", str(n),
        "--out", str(tmp_path / "eval.json"), "--device", "cpu",
    )  # fmt: skip
    assert ev.returncode == 0, ev.stderr
    got = json.loads((tmp_path / "eval.json").read_text())["metrics"]["val_loss_tiny"]
    model = load_checkpoint(out / "model.safetensors", GPTConfig(**TINY_MODEL))
    want = reference_val_loss(model, read_shard(shakespeare_dir / "val_000000.bin"), n)
    assert got == pytest.approx(want, abs=1e-4)
    assert got > 5.0


def _regions() -> dict:
    from lossgym.env.markers import marked_regions

    return {r.name: r for r in marked_regions("custom_pretrain.py", TEMPLATE.read_text())}


def test_region_shape():
    """The two editable regions sit between their read-only marker lines: compute_loss
    after the model, the 3-line hook in the training loop before the forward pass."""
    lines = TEMPLATE.read_text().splitlines()
    regions = _regions()
    assert list(regions) == ["compute_loss", "loss_state_hook"]
    loss, hook = regions["compute_loss"], regions["loss_state_hook"]
    body = lines[loss.start - 1 : loss.end]
    assert body[0] == "def compute_loss(logits, targets):" and len(body) == 3
    assert body[2].strip().startswith("return F.cross_entropy(")
    assert any(ln.startswith("loss_progress = 0.0") for ln in lines[: loss.start])
    assert lines[hook.start - 1 : hook.end][0] == "    loss_progress = iter_num / max_iters"
    assert hook.end - hook.start + 1 == 3
    loop = lines.index("for iter_num in range(max_iters):") + 1
    forward = lines.index("                logits = model(x)  # (B, T, V)") + 1
    call = lines.index(
        "                loss = compute_loss(logits, y)  # the objective: training follows its gradient"
    )
    assert loop < hook.start <= hook.end < forward < call + 1


def test_reads_top_to_bottom():
    """Like nanoGPT's train.py: every function reads only module-level names bound above
    it (config, model, data, then the loop), and no debug knob or GPU table is left."""
    import builtins
    import symtable

    text = TEMPLATE.read_text()
    bound: dict[str, int] = {}
    for node in ast.walk(ast.parse(text)):
        if isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
            bound.setdefault(node.id, node.lineno)
        elif isinstance(node, ast.FunctionDef | ast.ClassDef):
            bound.setdefault(node.name, node.lineno)
        elif isinstance(node, ast.Import | ast.ImportFrom):
            for alias in node.names:
                bound.setdefault((alias.asname or alias.name).split(".")[0], node.lineno)

    def reads(table: symtable.SymbolTable) -> set[str]:
        names = {s.get_name() for s in table.get_symbols() if s.is_global()}
        return names.union(*(reads(child) for child in table.get_children()))

    for table in symtable.symtable(text, "custom_pretrain.py", "exec").get_children():
        late = {
            name
            for name in reads(table)
            if not hasattr(builtins, name) and bound.get(name, 10**9) > table.get_lineno()
        }
        assert not late, f"{table.get_name()} (line {table.get_lineno()}) reads {late} later"
    assert "dump_batches_to" not in text and "989e12" not in text and "MFU" not in text
