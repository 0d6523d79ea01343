"""Pre-flight checks: free, fast, and run before a test spends any budget.

This first cut catches code that cannot even be parsed; the policy checks of
SPEC §6.1 (allowed names and imports, a smoke run of compute_loss) build on it.
"""

from __future__ import annotations

from collections.abc import Mapping

from lossgym.env.errors import AgentError


def check_syntax(files: Mapping[str, str]) -> None:
    """Raise AgentError naming the file and line of the first syntax error."""
    for path, text in files.items():
        if not path.endswith(".py"):
            continue
        try:
            compile(text, path, "exec", dont_inherit=True)
        except (SyntaxError, ValueError, RecursionError, MemoryError) as error:
            lineno = getattr(error, "lineno", None) or 0
            msg = getattr(error, "msg", None) or type(error).__name__
            line = (getattr(error, "text", None) or "").rstrip("\n")
            raise AgentError(
                f"ERROR: Pre-flight check failed (no test was used): {path} line "
                f"{lineno}: {msg}.\n{lineno:>6}| {line}\n"
                "Fix it with edit, then call test again."
            ) from None
