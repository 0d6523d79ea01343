"""Static policy for the agent's editable regions (SPEC §6.1), checked on the AST.

Region `compute_loss` may hold only function and constant definitions; the
loss-state hook only simple assignments to `loss_*` names. Both are held to
one allowlist (`lossgym/trainer/allowlist.py`):

- every attribute read, on whatever object, must be a listed name (torch's
  public tensor functions, F.*, math.*, tensor methods); attribute assignment
  (monkeypatching) is refused;
- every name read from outside the code's own scopes must be a listed builtin,
  torch/F/nn/math, loss state or the region's own definition (scope analysis
  comes from `symtable`, the compiler's own tables, so a local that shadows a
  global cannot smuggle a module in);
- imports, classes, generators' `yield`, `global`, decorators and dunder names
  are refused.

The policy is the second wall and an aid to the agent: its errors say what is
allowed. The sandbox contains whatever gets through, and the regions run in a
namespace built from the same allowlist (`lossgym/trainer/agent_code.py`).
"""

from __future__ import annotations

import ast
import symtable
import textwrap
from dataclasses import dataclass

from lossgym.errors import AgentError
from lossgym.trainer.allowlist import (
    ATTRIBUTES,
    BUILTINS,
    HOOK_READS,
    LOSS_STATE_PREFIX,
    MODULES,
    REFUSAL_HINTS,
)

# `match` is refused whole: a class pattern reads attributes by name
# (`case C(__globals__=g)`) without an ast.Attribute node to check.
FORBIDDEN_NODES = (
    ast.Import, ast.ImportFrom, ast.Global, ast.Nonlocal, ast.ClassDef,
    ast.AsyncFunctionDef, ast.AsyncFor, ast.AsyncWith, ast.Await, ast.Yield, ast.YieldFrom,
    ast.Match,
)  # fmt: skip
ALLOWED_TEXT = (
    "Only torch, F, nn and math may be used, through their public tensor functions, F.*, "
    "math.* and tensor methods (an allowlist); no imports, files, processes or network."
)


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
        + ALLOWED_TEXT
    )


def _parse(path: str, region: RegionCode) -> ast.Module:
    """The region as the runtime compiles it (agent_code.compile_region): the hook dedented."""
    source = textwrap.dedent(region.source) if region.name == "loss_state_hook" else region.source
    try:
        return ast.parse(source)
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
    _check_free_names(path, region, tree, MODULES | BUILTINS | defined)
    return frozenset(defined)


def _check_not_read_only(
    path: str, region: RegionCode, stmt: ast.stmt, name: str, read_only: frozenset[str]
) -> None:
    if name in read_only and name != "compute_loss" and not name.startswith(LOSS_STATE_PREFIX):
        why = (
            f"{name!r} is defined by the read-only part of the file; the regions cannot "
            "redefine it (training would not see the change)"
        )
        raise _fail(path, region, stmt.lineno, why)


def _check_hook(path: str, region: RegionCode, defined: frozenset[str]) -> None:
    tree = _parse(path, region)
    for stmt in tree.body:
        if isinstance(stmt, ast.Pass):
            continue
        if not isinstance(stmt, ast.Assign) or not all(
            isinstance(t, ast.Name) and t.id.startswith(LOSS_STATE_PREFIX) for t in stmt.targets
        ):
            why = "the loss-state hook may only assign names that start with loss_"
            raise _fail(path, region, stmt.lineno, why)
    _check_nodes(path, region, tree)
    _check_free_names(path, region, tree, MODULES | BUILTINS | HOOK_READS | defined)


def _check_nodes(path: str, region: RegionCode, tree: ast.AST) -> None:
    for node in ast.walk(tree):
        lineno = getattr(node, "lineno", 1)
        if isinstance(node, FORBIDDEN_NODES):
            raise _fail(path, region, lineno, f"{type(node).__name__} statements are not allowed")
        if isinstance(node, ast.Attribute):
            if isinstance(node.ctx, ast.Store | ast.Del):
                why = "assigning to attributes (monkeypatching) is not allowed"
                raise _fail(path, region, lineno, why)
            if node.attr not in ATTRIBUTES:
                hint = REFUSAL_HINTS.get(node.attr, "it is not on the allowlist")
                raise _fail(path, region, lineno, f"attribute .{node.attr} is not allowed ({hint})")
        name = _identifier(node)
        if name is not None and name.startswith("__"):
            raise _fail(path, region, lineno, f"name {name} is not allowed")
        if isinstance(node, ast.FunctionDef) and node.decorator_list:
            raise _fail(path, region, lineno, "decorators are not allowed")


def _identifier(node: ast.AST) -> str | None:
    """The name a node binds or reads: variables, functions, arguments, keywords, handlers."""
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.FunctionDef | ast.ExceptHandler):
        return node.name
    if isinstance(node, ast.arg | ast.keyword):
        return node.arg
    return None


def _check_free_names(
    path: str, region: RegionCode, tree: ast.Module, allowed: frozenset[str]
) -> None:
    """Every name read from the module (global) scope must be allowed (or loss state)."""
    reads = _global_reads(symtable.symtable(ast.unparse(tree), path, "exec"))
    first = _first_uses(tree)
    uses = sorted((first.get(name, 1), name) for name in reads)
    for lineno, name in uses:
        if name not in allowed and not name.startswith(LOSS_STATE_PREFIX):
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
