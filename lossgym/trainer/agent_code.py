"""The agent's editable regions, run in a namespace of their own (SPEC §6.2).

The training script never executes region code among its own globals. The
launcher (`launch.py`) and the pre-flight smoke run (`smoke.py`) load the
regions here instead:

- Region code runs in a namespace holding only stand-ins for `torch`, `F`,
  `nn` and `math` (the functions `allowlist.py` lists, nothing else), the
  listed builtins and the `loss_*` state. So it can neither read a name of the
  training script (its optimizer, model, data, config) nor shadow one: a
  region's `def min` or `def sorted` is the region's own.
- The script's training loop calls `AgentLoss`, not the agent's function. It hands the agent
  the logits detached (a leaf with no autograd path to the parameters; it
  shares their storage, so writing into it is refused) and a copy of the
  targets, and bridges the gradient back: in the
  backward pass it differentiates the agent's loss with respect to that leaf
  and passes the result on to the real logits. Same numbers, same memory as a
  direct call, but frames, `grad_fn`, `.data` and the garbage collector lead
  nowhere near the weights, the optimizer or the data.
- The loss-state hook runs once per iteration in the same namespace, with
  `iter_num` and `max_iters` given to it; it can set `loss_*` names only.

This is the second wall; the sandbox around the whole process is the first.
"""

from __future__ import annotations

import ast
import builtins
import math
import textwrap
import traceback
from dataclasses import dataclass
from types import CodeType, SimpleNamespace
from typing import Any

from lossgym.trainer.allowlist import (
    BUILTINS,
    FUNCTIONAL,
    HOOK_READS,
    LOSS_STATE_PREFIX,
    MATH,
    NN,
    TORCH,
)

LOSS_REGION = "compute_loss"
HOOK_REGION = "loss_state_hook"
HOOK_CALL = "_lossgym_loss_state_hook"  # what the script calls where the hook's lines were
PRINT_PREFIX = "[loss] "
MESSAGE_CHARS = 300


@dataclass(frozen=True)
class RegionSource:
    name: str  # compute_loss | loss_state_hook
    start: int  # first line in the file (1-based)
    end: int  # last line, inclusive
    source: str  # lines start..end, each ending in a newline


def regions_in(script: str, spans: list[dict[str, Any]]) -> list[RegionSource]:
    """The regions of `script` at `spans` ([{name, start, end}], 1-based, inclusive)."""
    lines = script.split("\n")  # as the workspace numbers them: a final newline ends a line
    n_lines = len(lines) - 1 if lines[-1] == "" else len(lines)
    found = []
    for span in spans:
        start, end = int(span["start"]), int(span["end"])
        if not 1 <= start <= end <= n_lines:
            raise ValueError(
                f"region {span['name']} ({start}-{end}) is outside the file's {n_lines} lines"
            )
        text = "".join(line + "\n" for line in lines[start - 1 : end])
        found.append(RegionSource(str(span["name"]), start, end, text))
    return found


def _stand_in(module: Any, names: frozenset[str], **extra: Any) -> SimpleNamespace:
    """A namespace with only `names` of `module` (those it has), plus `extra`."""
    found = {name: getattr(module, name) for name in sorted(names) if hasattr(module, name)}
    found.update(extra)
    return SimpleNamespace(**found)


def _inert_import(name: str, *args: Any, **kwargs: Any) -> None:
    """`__import__` for region code: imports nothing, hands out nothing.

    torch's C code imports modules it already loaded (`torch.tensor(1.0)`
    imports `torch.storage`) through the builtins of the calling frame, here
    the region's. CPython's PyImport_Import calls `__import__` only for its
    side effect and then reads `sys.modules` itself, so succeeding without
    doing anything serves torch, while an `import` in region code (which the
    policy refuses anyway) binds None.
    """
    import sys

    if name not in sys.modules:
        raise ImportError(f"region code cannot import {name}")


def _agent_print(*values: Any, sep: Any = " ", end: Any = "\n", **_: Any) -> None:
    """`print` for region code: every line it writes starts with `[loss] `, so no
    line it prints can pass for the script's own (a TRAIN_METRICS line, say)."""
    import sys

    text = str(sep).join(str(v) for v in values) + str(end)
    lines = text.splitlines() or [""]
    sys.stdout.write("".join(f"{PRINT_PREFIX}{line}\n" for line in lines))
    sys.stdout.flush()


def agent_namespace(loss_state: dict[str, Any] | None = None) -> dict[str, Any]:
    """A fresh namespace for region code: stand-ins, listed builtins, loss state."""
    import torch
    import torch.nn as nn
    from torch.nn import functional

    f = _stand_in(functional, FUNCTIONAL)
    nn_stand_in = _stand_in(nn, NN - {"functional"}, functional=f)
    allowed_builtins: dict[str, Any] = {name: getattr(builtins, name) for name in BUILTINS}
    allowed_builtins["__import__"] = _inert_import
    allowed_builtins["print"] = _agent_print
    namespace: dict[str, Any] = {
        "__builtins__": allowed_builtins,  # without it, exec would add the real builtins
        "__name__": "agent_regions",
        "torch": _stand_in(torch, TORCH - {"nn"}, nn=nn_stand_in),
        "F": f,
        "nn": nn_stand_in,
        "math": _stand_in(math, MATH),
    }
    for name, value in (loss_state or {}).items():
        if name.startswith(LOSS_STATE_PREFIX):
            namespace[name] = value
    return namespace


def compile_region(region: RegionSource, path: str) -> CodeType:
    """Region code compiled at its real line numbers, so tracebacks name file lines."""
    source = region.source
    if region.name == HOOK_REGION:
        source = textwrap.dedent(source)  # the hook sits inside the training loop
    return compile("\n" * (region.start - 1) + source, path, "exec", dont_inherit=True)


class _Graph:
    """The agent's loss and the leaf it was computed from, kept for the backward pass."""

    def __init__(self, leaf: Any, loss: Any) -> None:
        self.leaf, self.loss = leaf, loss


def _bridge() -> Any:
    import torch

    class LossBridge(torch.autograd.Function):
        """Forward: the agent's loss value. Backward: d(agent loss)/d(leaf) → d/d(logits)."""

        @staticmethod
        def forward(ctx: Any, logits: Any, graph: _Graph) -> Any:
            ctx.graph = graph
            return graph.loss.detach().clone()

        @staticmethod
        def backward(ctx: Any, grad_output: Any) -> tuple[Any, None]:
            graph, ctx.graph = ctx.graph, None
            if not graph.loss.requires_grad:
                return None, None
            (grad,) = torch.autograd.grad(graph.loss, graph.leaf, grad_output, allow_unused=True)
            return grad, None

    return LossBridge


class AgentCodeError(RuntimeError):
    """Region code raised. The message is one line, with the file line it came from:
    the agent's own exception text is never printed raw (it could forge log lines)."""


def run_agent(what: str, path: str, function: Any, *args: Any) -> Any:
    """`function(*args)`, with any exception it raises turned into an AgentCodeError,
    and torch's grad mode as it found it (a reused `torch.no_grad()` can leave it off)."""
    import torch

    grad_enabled = torch.is_grad_enabled()
    try:
        return function(*args)
    except Exception as error:
        raise AgentCodeError(f"{what} raised {_one_line(error, path)}") from None
    finally:
        torch.set_grad_enabled(grad_enabled)


def _one_line(error: Exception, path: str) -> str:
    """`Type: message (line N)`, safe to print: the message's own newlines are gone, and
    a message that cannot even be made a string (a RecursionError in its repr) is left out."""
    try:
        message = " | ".join(str(error).splitlines())[:MESSAGE_CHARS]
    except BaseException:  # noqa: BLE001 - nothing of the agent's may escape unsanitised
        message = "(a message that cannot be shown)"
    error.__context__ = error.__cause__ = None
    frames = [f for f in traceback.extract_tb(error.__traceback__) if f.filename == path]
    at = f" (line {frames[-1].lineno})" if frames else ""
    return f"{type(error).__name__}: {message}{at}"


class LossContractError(TypeError):
    """compute_loss broke its contract: not a floating-point scalar, or wrote its logits."""


class AgentLoss:
    """What the training script calls as compute_loss(logits, targets)."""

    def __init__(self, function: Any, path: str) -> None:
        if not callable(function):
            raise LossContractError("compute_loss must be a function compute_loss(logits, targets)")
        self.function, self.path = function, path
        self.bridge = _bridge()

    def __call__(self, logits: Any, targets: Any) -> Any:
        import torch

        if not (torch.is_grad_enabled() and logits.requires_grad):
            with torch.no_grad():
                return _checked(self._call(logits.detach().clone(), targets.clone()))
        # The leaf shares storage with the logits (a copy would cost a whole B x T x V
        # buffer): writing into it is refused, by its version counter.
        leaf, version = logits.detach().requires_grad_(), logits._version
        loss = _checked(self._call(leaf, targets.clone()))
        if logits._version != version:
            raise LossContractError(
                "compute_loss wrote into its logits in place; use out-of-place operations "
                "(logits.clamp(...), not logits.clamp_(...))"
            )
        return self.bridge.apply(logits, _Graph(leaf, loss))

    def _call(self, logits: Any, targets: Any) -> Any:
        return run_agent("compute_loss", self.path, self.function, logits, targets)


def _checked(loss: Any) -> Any:
    import torch

    if not isinstance(loss, torch.Tensor):
        raise LossContractError(
            f"compute_loss returned {type(loss).__name__}; it must return a scalar tensor"
        )
    if loss.dim() != 0:
        raise LossContractError(
            f"compute_loss returned shape {tuple(loss.shape)}; it must return a scalar (0-dim)"
        )
    if not loss.is_floating_point():
        raise LossContractError(
            f"compute_loss returned a {loss.dtype} tensor; it must be floating-point"
        )
    return loss


class LossStateHook:
    """Runs the hook region with iter_num and max_iters, in the agent's namespace."""

    def __init__(self, code: CodeType | None, namespace: dict[str, Any], path: str) -> None:
        self.code, self.namespace, self.path = code, namespace, path

    def __call__(self, **values: Any) -> None:
        if self.code is None:
            return
        self.namespace.update({k: v for k, v in values.items() if k in HOOK_READS})
        run_agent("the loss-state hook", self.path, exec, self.code, self.namespace)


def template_loss_state(script: str, regions: list[RegionSource]) -> dict[str, Any]:
    """`loss_* = <literal>` at module level in the read-only lines: the state's defaults."""
    state: dict[str, Any] = {}
    for node in ast.parse(blank_regions(script, regions)).body:
        if isinstance(node, ast.Assign) and len(node.targets) == 1:
            target = node.targets[0]
            if isinstance(target, ast.Name) and target.id.startswith(LOSS_STATE_PREFIX):
                try:
                    state[target.id] = ast.literal_eval(node.value)
                except ValueError:
                    continue
    return state


def blank_regions(script: str, regions: list[RegionSource]) -> str:
    """The script with every region line emptied, except one call where the hook was."""
    lines = script.split("\n")
    for region in regions:
        span = range(region.start - 1, region.end)
        code_lines = [i for i in span if lines[i].strip() and not lines[i].lstrip().startswith("#")]
        for i in span:
            lines[i] = ""
        if region.name == HOOK_REGION and code_lines:
            indent = _indent(script.split("\n")[code_lines[0]])
            reads = ", ".join(f"{name}={name}" for name in sorted(HOOK_READS))
            lines[code_lines[0]] = f"{indent}{HOOK_CALL}({reads})"
    return "\n".join(lines)


def _indent(line: str) -> str:
    return line[: len(line) - len(line.lstrip())]


def load_regions(
    path: str, script: str, regions: list[RegionSource]
) -> tuple[AgentLoss | None, LossStateHook, dict[str, Any]]:
    """Execute the loss region in a fresh agent namespace; compile the hook.

    Returns the loss the script calls (None when there is no loss region), the
    hook, and the namespace (the smoke run inspects it).
    """
    namespace = agent_namespace(template_loss_state(script, regions))
    hook_code = None
    for region in regions:
        if region.name == LOSS_REGION:
            code = compile_region(region, path)
            run_agent("the compute_loss region", path, exec, code, namespace)
        elif region.name == HOOK_REGION:
            hook_code = compile_region(region, path)
        else:
            raise ValueError(f"unknown editable region {region.name!r}")
    has_loss = any(r.name == LOSS_REGION for r in regions)
    loss = AgentLoss(namespace.get("compute_loss"), path) if has_loss else None
    return loss, LossStateHook(hook_code, namespace, path), namespace
