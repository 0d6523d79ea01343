"""Static policy for the agent's editable regions (SPEC §6.1), checked on the AST.

Region `compute_loss` may hold only function and constant definitions; the
loss-state hook only simple assignments to `loss_*` names. Every name the code
reads from outside its own scopes must be on an allowlist (torch, F, nn, math,
harmless builtins, loss state, the region's own definitions): scope analysis
comes from `symtable`, the same tables the compiler uses, so a local that
shadows a global cannot smuggle a forbidden module in. Imports, dunder
attributes, attribute assignment (monkeypatching) and file, process or
network access are refused. This is defence in depth: the sandbox still
contains whatever gets through.
"""

from __future__ import annotations

import ast
import symtable
import textwrap
from dataclasses import dataclass

from lossgym.env.errors import AgentError

ALLOWED_MODULES = frozenset({"torch", "F", "nn", "math"})
SAFE_BUILTINS = frozenset(
    "abs all any bool dict divmod enumerate filter float int isinstance len list map max min "
    "pow print range reversed round set slice sorted sum tuple zip "
    "ArithmeticError AssertionError Exception RuntimeError TypeError ValueError".split()
)
HOOK_READS = frozenset({"iter_num", "max_iters"})
# Attributes that reach files, processes, compiled code or the distributed runtime.
FORBIDDEN_ATTRIBUTES = frozenset(
    "load save hub ops library classes utils distributed multiprocessing jit package "
    "from_file fromfile tofile set_default_device set_default_dtype manual_seed seed "
    "set_rng_state get_rng_state cuda_rng_state backends compiler _C".split()
)
FORBIDDEN_NODES = (
    ast.Import, ast.ImportFrom, ast.Global, ast.Nonlocal, ast.ClassDef,
    ast.AsyncFunctionDef, ast.Await, ast.Yield, ast.YieldFrom,
)  # fmt: skip


@dataclass(frozen=True)
class RegionCode:
    name: str  # "compute_loss" | "loss_state_hook"
    start: int  # first line in the file (1-based)
    source: str


def check_regions(path: str, regions: list[RegionCode], read_only: frozenset[str]) -> None:
    """Raise AgentError at the first violation, naming the file line.

    `read_only` holds the module-level names the rest of the file binds (config,
    model, data, loop variables): region code may read none of them and rebind
    none of them, except the loss state (`loss_*`) and compute_loss itself.
    """
    defined: frozenset[str] = frozenset()
    for region in regions:
        if region.name == "compute_loss":
            defined |= _check_definitions(path, region, read_only)
    for region in regions:
        if region.name == "loss_state_hook":
            _check_hook(path, region, defined)


def _fail(path: str, region: RegionCode, lineno: int, why: str) -> AgentError:
    line = region.start + lineno - 1
    return AgentError(
        f"ERROR: Pre-flight check failed (no test was used): {path} line {line}: {why}. "
        "Only torch, F, nn and math may be used; no imports, file, process or network access."
    )


def _parse(path: str, region: RegionCode) -> ast.Module:
    try:
        return ast.parse(textwrap.dedent(region.source))
    except SyntaxError as error:
        raise _fail(path, region, error.lineno or 1, f"syntax error: {error.msg}") from None


def _check_definitions(path: str, region: RegionCode, read_only: frozenset[str]) -> frozenset[str]:
    tree = _parse(path, region)
    defined: set[str] = set()
    for stmt in tree.body:
        if isinstance(stmt, ast.FunctionDef):
            _check_not_read_only(path, region, stmt, stmt.name, read_only)
            defined.add(stmt.name)
        elif isinstance(stmt, ast.Assign | ast.AnnAssign):
            targets = stmt.targets if isinstance(stmt, ast.Assign) else [stmt.target]
            if not all(isinstance(t, ast.Name) for t in targets):
                raise _fail(path, region, stmt.lineno, "only simple constant names may be defined")
            for target in targets:
                assert isinstance(target, ast.Name)
                _check_not_read_only(path, region, stmt, target.id, read_only)
                defined.add(target.id)
        elif not _is_docstring_or_pass(stmt):
            why = f"only function and constant definitions belong here, not {type(stmt).__name__}"
            raise _fail(path, region, stmt.lineno, why)
    if "compute_loss" not in defined:
        raise _fail(path, region, 1, "compute_loss(logits, targets) must stay defined here")
    _check_nodes(path, region, tree)
    _check_free_names(path, region, tree, ALLOWED_MODULES | SAFE_BUILTINS | defined)
    return frozenset(defined)


def _check_not_read_only(
    path: str, region: RegionCode, stmt: ast.stmt, name: str, read_only: frozenset[str]
) -> None:
    if name in read_only and name != "compute_loss" and not name.startswith("loss_"):
        why = f"{name!r} is defined by the read-only part of the file and cannot be redefined"
        raise _fail(path, region, stmt.lineno, why)


def _check_hook(path: str, region: RegionCode, defined: frozenset[str]) -> None:
    tree = _parse(path, region)
    for stmt in tree.body:
        if isinstance(stmt, ast.Pass):
            continue
        if not isinstance(stmt, ast.Assign) or not all(
            isinstance(t, ast.Name) and t.id.startswith("loss_") for t in stmt.targets
        ):
            why = "the loss-state hook may only assign names that start with loss_"
            raise _fail(path, region, stmt.lineno, why)
    _check_nodes(path, region, tree)
    _check_free_names(path, region, tree, ALLOWED_MODULES | SAFE_BUILTINS | HOOK_READS | defined)


def _check_nodes(path: str, region: RegionCode, tree: ast.AST) -> None:
    for node in ast.walk(tree):
        lineno = getattr(node, "lineno", 1)
        if isinstance(node, FORBIDDEN_NODES):
            raise _fail(path, region, lineno, f"{type(node).__name__} statements are not allowed")
        if isinstance(node, ast.Attribute):
            if node.attr.startswith("__") or node.attr in FORBIDDEN_ATTRIBUTES:
                raise _fail(path, region, lineno, f"attribute .{node.attr} is not allowed")
            if isinstance(node.ctx, ast.Store | ast.Del):
                why = "assigning to attributes (monkeypatching) is not allowed"
                raise _fail(path, region, lineno, why)
        if isinstance(node, ast.Name) and node.id.startswith("__"):
            raise _fail(path, region, lineno, f"name {node.id} is not allowed")
        if isinstance(node, ast.FunctionDef) and node.decorator_list:
            raise _fail(path, region, lineno, "decorators are not allowed")


def _check_free_names(
    path: str, region: RegionCode, tree: ast.Module, allowed: frozenset[str]
) -> None:
    """Every name read from the module (global) scope must be allowed (or loss state)."""
    reads = _global_reads(symtable.symtable(textwrap.dedent(region.source), path, "exec"))
    first = _first_uses(tree)
    uses = sorted((first.get(name, 1), name) for name in reads)
    for lineno, name in uses:
        if name not in allowed and not name.startswith("loss_"):
            raise _fail(path, region, lineno, f"name {name!r} is not available here")


def _global_reads(table: symtable.SymbolTable) -> set[str]:
    names = set()
    for symbol in table.get_symbols():
        at_module = table.get_type() == "module"
        from_module = symbol.is_global() or (at_module and not symbol.is_assigned())
        if symbol.is_referenced() and from_module:
            names.add(symbol.get_name())
    for child in table.get_children():
        names |= _global_reads(child)
    return names


def _first_uses(tree: ast.Module) -> dict[str, int]:
    """The line of each name's first occurrence, in one walk of the tree."""
    first: dict[str, int] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Name):
            first.setdefault(node.id, node.lineno)
    return first


def _is_docstring_or_pass(stmt: ast.stmt) -> bool:
    if isinstance(stmt, ast.Pass):
        return True
    return isinstance(stmt, ast.Expr) and isinstance(stmt.value, ast.Constant)
