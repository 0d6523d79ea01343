"""The static policy on the real template: each class of hostile code, in several
variants, is refused with a clear error on its line; honest losses pass."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from lossgym.env.baselines import apply_baseline, load_baseline
from lossgym.env.catalog import TaskCache
from lossgym.env.workspace import Workspace
from lossgym.errors import AgentError
from lossgym.sandbox.preflight import Preflight, check_static
from tests.conftest import REPO
from tests.sandbox.runner_fixtures import make_test_runner

FILE = "nanoGPT/custom_pretrain.py"
TASK = TaskCache(REPO / "tasks").get("llm-pretrain-loss")

HEADER = "def compute_loss(logits, targets):\n"
CE = "    return F.cross_entropy(logits.view(-1, logits.size(-1)), targets.view(-1), ignore_index=-1)\n"


def _body(*lines: str) -> str:
    return HEADER + "".join(f"    {line}\n" for line in lines) + CE


# Each class of the security review, several variants each: (class, variant) → region text.
HOSTILE: dict[tuple[str, str], str] = {}


def _add(cls: str, **variants: str) -> None:
    HOSTILE.update({(cls, name): text for name, text in variants.items()})


_add(
    "module through an attribute",
    torch_os=_body("torch.os.system('id')"),
    sys_modules=_body("m = torch.sys.modules"),
    f_importlib=_body("F.importlib.import_module('os')"),
    builtins_exec=_body("torch.builtins.exec('1')"),
    ctypes=_body("torch.ctypes.CDLL(None)"),
    serialization=_body("torch.serialization.pickle"),
    ops=_body("torch._ops.ops"),
    f_numpy=_body("F.np.save('x', 1)"),
    nn_modules=_body("nn.modules.module.register_module_forward_hook(print)"),
    torch_utils=_body("torch.utils.data"),
    functional_torch=_body("F.torch.load('x')"),
    math_in_f=_body("m = F.math"),
    warnings=_body("F.warnings.warn('x')"),
)
_add(
    "frames without dunders",
    generator=_body("g = (0 for _ in ()).gi_frame.f_globals"),
    generator_back=_body("f = (0 for _ in ()).gi_frame.f_back"),
    traceback=_body("try:", "    1 / 0", "except Exception as e:", "    t = e.__traceback__"),
    with_traceback=_body("e = Exception()", "e.with_traceback(None)"),
    tb_frame=_body("f = logits.tb_frame"),
    hook_rhs="def compute_loss(logits, targets):\n" + CE,  # paired with a hook below
)
_add(
    "attribute walks in format strings",
    format=_body("s = '{0.__globals__}'.format(compute_loss)"),
    format_map=_body("s = '{x.f_globals}'.format_map({'x': 1})"),
    str_format=_body("s = 'a{}'.format"),
    fstring_dunder=_body("s = f'{compute_loss.__globals__}'"),
)
_add(
    "the autograd graph",
    grad_fn=_body("p = logits.grad_fn.next_functions"),
    variable=_body("logits.grad_fn.next_functions[0][0].variable.data.mul_(0)"),
    data=_body("w = logits.data"),
    base=_body("w = logits._base"),
    backward=_body("logits.sum().backward()"),
    autograd=_body("torch.autograd.grad(logits.sum(), logits)"),
    register_hook=_body("logits.register_hook(print)"),
    grad=_body("g = logits.grad"),
    retain_grad=_body("logits.retain_grad()"),
)
_add(
    "files through tensor methods",
    numpy_dump=_body("logits.detach().numpy().dump('/tmp/x')"),
    numpy_tofile=_body("logits.numpy().tofile('/tmp/x')"),
    torch_save=_body("torch.save(logits, '/tmp/x')"),
    torch_load=_body("torch.load('/data/val_000000.bin')"),
    from_file=_body("torch.from_file('/data/val_000000.bin')"),
    storage=_body("s = logits.untyped_storage()"),
    open_builtin=_body("open('/etc/passwd').read()"),
)
_add(
    "RNG state, hooks, threads",
    manual_seed=_body("torch.manual_seed(0)"),
    get_rng_state=_body("s = torch.get_rng_state()"),
    generator_obj=_body("g = torch.Generator()"),
    default_generator=_body("g = torch.default_generator"),
    module_hook=_body("nn.Module.register_forward_hook"),
    set_grad=_body("torch.set_grad_enabled(False)"),
    threads=_body("torch.set_num_threads(64)"),
)
_add(
    "builtins that reach outside",
    getattr=_body("getattr(torch, 'load')"),
    eval=_body("eval('1')"),
    exec=_body("exec('1')"),
    vars=_body("v = vars(torch)"),
    globals=_body("g = globals()"),
    type=_body("t = type(logits)"),
    dunder_import=_body("__import__('os')"),
    breakpoint=_body("breakpoint()"),
    compile=_body("compile('1', 'x', 'eval')"),
    setattr=_body("setattr(F, 'cross_entropy', None)"),
    object=_body("o = object"),
)
_add(
    "statements and names the regions may not use",
    import_=_body("import os"),
    from_import=_body("from os import system"),
    global_=HEADER + "    global learning_rate\n    learning_rate = 1.0\n" + CE,
    class_="class X:\n    pass\n" + HEADER + CE,
    decorator="@torch.jit.script\n" + HEADER + CE,
    statement_at_top="print('hi')\n" + HEADER + CE,
    reads_script_name=_body("z = optimizer"),
    reads_model=_body("z = raw_model"),
    os_from_template=_body("os.system('id')"),
    numpy_from_template=_body("np.fromfile('x')"),
    yield_=HEADER + "    yield 1\n",
    shadow_config="learning_rate = 10.0\n" + HEADER + CE,
    shadow_module="F = None\n" + HEADER + CE,
    no_compute_loss="def other(logits, targets):\n" + CE,
    local_shadow_trick="def f():\n    os = 1\n    return os\n"
    + HEADER
    + "    os.system('id')\n"
    + CE,
    dunder_attribute=_body("c = logits.__class__"),
)
_add(
    "attributes read by a match pattern",  # found by a red-team pass: no ast.Attribute node
    class_pattern=_body(
        "match torch.no_grad():", "    case torch.no_grad(__reduce_ex__=r):", "        pass"
    ),
    plain_names=_body("match logits:", "    case torch.Tensor(grad_fn=g):", "        pass"),
    mapping=_body("match {}:", "    case {'a': 1}:", "        pass"),
    value=_body("match 1:", "    case 1:", "        pass"),
)
_add(
    "dunder names outside an expression",
    function=HEADER + CE + "def __builtins__():\n    return 1\n",
    argument=HEADER.replace("targets)", "targets, __globals__=None)") + CE,
    keyword=_body("x = dict(__class__=1)"),
    handler=_body("try:", "    x = 1", "except Exception as __e:", "    pass"),
)
_add(
    "monkeypatching",
    f_attribute=_body("F.cross_entropy = lambda *a, **k: 0"),
    at_top="F.cross_entropy = None\n" + HEADER + CE,
    tensor_method=_body("torch.Tensor.add = None"),
    delete=_body("del torch.tanh"),
)

HOOK_HOSTILE = {
    "sets the learning rate": "    learning_rate = 1.0\n    pass\n    pass\n",
    "touches the optimizer": "    loss_x = optimizer.param_groups\n    pass\n    pass\n",
    "calls open": "    loss_x = open('x')\n    pass\n    pass\n",
    "attribute assignment": "    model.lm_head = None\n    pass\n    pass\n",
    "frame on the right-hand side": "    loss_x = (0 for _ in ()).gi_frame.f_globals\n    pass\n",
    "walks into the model": "    loss_x = raw_model.lm_head.weight.data\n    pass\n",
    "sets iter_num": "    iter_num = 0\n    pass\n    pass\n",
    "format walk": "    loss_x = '{0.f_globals}'.format(1)\n    pass\n",
}

# No effect at run time (the regions have a namespace of their own), so the policy
# lets them through: the e2e suite shows that they change nothing.
HARMLESS_SHADOWS = {
    "def sorted": "def sorted(values, **kwargs):\n    return ['val']\n",
    "def min": "def min(a, b):\n    return a\n",
    "def range": "def range(n):\n    return [0, 1]\n",
    "def isinstance": "def isinstance(a, b):\n    return False\n",
    "len constant": "len = 3\n",
}


def _workspace() -> Workspace:
    return TASK.new_workspace()


def _region(ws: Workspace, name: str) -> tuple[int, int]:
    region = next(r for r in ws.regions_of(FILE) if r.name == name)
    return region.start, region.end


def _check(ws: Workspace) -> None:
    check_static(ws.files, {FILE: ws.regions_of(FILE)})


@pytest.mark.parametrize("key", sorted(HOSTILE), ids=lambda k: f"{k[0]}: {k[1]}")
def test_hostile_compute_loss_is_refused_on_its_line(key: tuple[str, str]) -> None:
    ws = _workspace()
    start, end = _region(ws, "compute_loss")
    ws.replace(FILE, start, end, HOSTILE[key] + "\n")
    if key[1] == "hook_rhs":
        hook_start, hook_end = _region(ws, "loss_state_hook")
        rhs = "    loss_frames = (0 for _ in ()).gi_frame.f_globals['optimizer']\n    pass\n"
        ws.replace(FILE, hook_start, hook_end, rhs)
        start = hook_start
    with pytest.raises(AgentError) as error:
        _check(ws)
    text = str(error.value)
    assert text.startswith("ERROR: Pre-flight check failed (no test was used): "), text
    line = int(text.split(" line ")[1].split(":")[0])
    assert start <= line <= start + HOSTILE[key].count("\n"), text
    assert "allowlist" in text


def test_a_refused_attribute_is_named_with_the_reason() -> None:
    ws = _workspace()
    start, end = _region(ws, "compute_loss")
    ws.replace(FILE, start, end, _body("p = logits.grad_fn") + "\n")
    with pytest.raises(
        AgentError, match=r"attribute \.grad_fn is not allowed \(it walks the autograd"
    ):
        _check(ws)
    ws.replace(FILE, start, start + 3, _body("p = logits.frobnicate()") + "\n")
    with pytest.raises(AgentError, match=r"attribute \.frobnicate is not allowed \(it is not on"):
        _check(ws)


@pytest.mark.parametrize("name", sorted(HOOK_HOSTILE))
def test_hostile_hook_is_refused(name: str) -> None:
    ws = _workspace()
    start, end = _region(ws, "loss_state_hook")
    ws.replace(FILE, start, end, HOOK_HOSTILE[name])
    with pytest.raises(AgentError, match="Pre-flight check failed"):
        _check(ws)


@pytest.mark.parametrize("name", sorted(HARMLESS_SHADOWS))
def test_shadowing_a_builtin_is_the_regions_own_business(name: str) -> None:
    ws = _workspace()
    start, end = _region(ws, "compute_loss")
    ws.replace(FILE, start, end, HARMLESS_SHADOWS[name] + HEADER + CE)
    _check(ws)


def test_honest_schedule_with_helpers_passes() -> None:
    ws = _workspace()
    start, end = _region(ws, "compute_loss")
    body = (
        "SMOOTHING = 0.1\n\n"
        "def _smoothing():\n"
        "    return SMOOTHING * (1.0 - loss_progress) + 0.5 * math.cos(math.pi * loss_temperature)\n\n"
        "def compute_loss(logits, targets):\n"
        "    flat = logits.view(-1, logits.size(-1)).float()\n"
        "    mask = targets.view(-1) != -1\n"
        "    eps = max(0.0, _smoothing())\n"
        "    top = torch.topk(flat, 2, dim=-1).values\n"
        "    info = torch.finfo(flat.dtype).eps\n"
        "    losses = [F.cross_entropy(flat, targets.view(-1), ignore_index=-1, label_smoothing=eps)]\n"
        "    losses.append(1e-4 * torch.logsumexp(flat, dim=-1).square().mean() + 0 * top.sum() * info)\n"
        "    return sum(losses) + 0.0 * mask.sum()\n\n"
    )
    ws.replace(FILE, start, end, body)
    hook_start, hook_end = _region(ws, "loss_state_hook")
    ws.replace(
        FILE, hook_start, hook_end,
        "    loss_progress = iter_num / max_iters\n    loss_temperature = min(1.0, 2 * loss_progress)\n    pass\n",
    )  # fmt: skip
    _check(ws)


def test_template_baselines_and_seed_edits_pass_with_the_smoke_run(tmp_path: Path) -> None:
    preflight = Preflight(make_test_runner("bwrap"), tmp_path)
    workspaces = [_workspace()]
    for name in TASK.spec.baselines:
        workspaces.append(_workspace())
        apply_baseline(workspaces[-1], load_baseline(TASK, name))
    for example in ("edit_polyloss.json", "edit_softcap.json"):
        ws = _workspace()
        edit = json.loads(Path(REPO / "examples" / example).read_text())
        start, end = _region(ws, "compute_loss")
        ws.replace(FILE, start, end, edit["content"])
        workspaces.append(ws)
    for i, ws in enumerate(workspaces):
        preflight.check(f"s{i}", dict(ws.files), {FILE: ws.regions_of(FILE)}, TASK.spec.preflight)
