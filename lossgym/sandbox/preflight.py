"""Pre-flight checks: free, fast, and run before a test spends any budget.

First the workspace must parse; then each editable region must follow the
static policy of SPEC §6.1 (`policy.py`); then compute_loss runs once on random
logits (`lossgym.trainer.smoke`) inside the configured runner, with the task's
pre-flight limits, exactly like training: the API process never executes agent
code. Smoke runs are rate-limited per session and bounded in number at once,
and a workspace is never smoke-run twice (verdicts are kept by content hash).
"""

from __future__ import annotations

import contextlib
import json
import secrets
import shutil
import symtable
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Mapping, Sequence
from pathlib import Path

from lossgym.env.limits import PreflightSpec
from lossgym.env.workspace import Region
from lossgym.errors import AgentError, RateLimited, ServiceUnavailable
from lossgym.sandbox.policy import RegionCode, check_regions
from lossgym.sandbox.runner import (
    PYTHON,
    Limits,
    Mount,
    Runner,
    RunSpec,
    base_env,
    is_queuing,
    redact_host_paths,
)
from lossgym.sandbox.standby import IDLE_S, Standby

PREFIX = "ERROR: Pre-flight check failed (no test was used): "
FIX = "Fix it with edit, then call test again."
VERDICT = "LOSSGYM_SMOKE"  # lossgym.trainer.smoke's verdict line
CACHE_SIZE = 4096


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
            where = f"{path} line {lineno}: {msg}.\n{lineno:>6}| {line}"
            raise AgentError(f"{PREFIX}{where}\n{FIX}") from None


def check_static(files: Mapping[str, str], regions: Mapping[str, Sequence[Region]]) -> None:
    """Syntax of every Python file, then the policy for each file's editable regions."""
    check_syntax(files)
    for path, file_regions in regions.items():
        if file_regions and path.endswith(".py"):
            lines = files[path].split("\n")
            code = [RegionCode(r.name, r.start, _source(lines, r)) for r in file_regions]
            check_regions(path, code, _read_only_names(path, lines, file_regions))


class Preflight:
    """The whole pre-flight of a workspace, smoke run included, for the episode service."""

    def __init__(
        self,
        runner: Runner,
        work_dir: Path,
        per_minute: int = 10,
        at_once: int = 2,
        warm: bool = False,
    ) -> None:
        """`warm`: keep a smoke sandbox started ahead for the next check (the service
        does; call close() at shutdown), so a check costs no Python start-up."""
        self.runner, self.work_dir, self.per_minute = runner, work_dir, per_minute
        # A queuing runner (Slurm) would hold an allocation idle for each one ahead.
        self.warm, self._closed = warm and not is_queuing(runner), False
        self._standbys: dict[str, _SmokeStandby] = {}
        self._slots = threading.BoundedSemaphore(at_once)
        self._lock = threading.Lock()
        self._recent: dict[str, deque[float]] = {}
        self._verdicts: OrderedDict[str, str | None] = OrderedDict()

    def check(
        self,
        session_id: str,
        files: Mapping[str, str],
        regions: Mapping[str, Sequence[Region]],
        spec: PreflightSpec,
    ) -> None:
        """Raise AgentError (RateLimited when too frequent) unless the workspace passes."""
        key = _verdict_key(files, regions, spec)
        with self._lock:
            known = key in self._verdicts
            verdict = self._verdicts.get(key)
        if not known:
            check_static(files, regions)
            self._count(session_id)
            verdict = self.smoke(files, regions, spec)
            with self._lock:
                self._verdicts[key] = verdict
                while len(self._verdicts) > CACHE_SIZE:
                    self._verdicts.popitem(last=False)
        if verdict is not None:
            raise AgentError(verdict)

    def _count(self, session_id: str) -> None:
        """One more smoke run for the session, or RateLimited."""
        now = time.monotonic()
        with self._lock:
            recent = self._recent.setdefault(session_id, deque())
            while recent and now - recent[0] > 60:
                recent.popleft()
            if len(recent) >= self.per_minute:
                wait = 60 - (now - recent[0])
                raise RateLimited(
                    f"ERROR: Pre-flight checks are limited to {self.per_minute} per minute per "
                    f"session (each runs your compute_loss in a sandbox); try again in "
                    f"{wait:.0f} s. A workspace that was already checked answers at once."
                )
            recent.append(now)

    def smoke(
        self, files: Mapping[str, str], regions: Mapping[str, Sequence[Region]], spec: PreflightSpec
    ) -> str | None:
        """The smoke run's verdict: None when compute_loss passed, else the agent's text."""
        for path, file_regions in regions.items():
            if any(r.name == "compute_loss" for r in file_regions):
                with self._slots:
                    problem = self._smoke_file(path, files[path], file_regions, spec)
                if problem is not None:
                    return problem
        return None

    def _smoke_file(
        self, path: str, script: str, regions: Sequence[Region], spec: PreflightSpec
    ) -> str | None:
        nonce = secrets.token_hex(16)
        request = {"path": path, "script": script, "nonce": nonce,
                   "regions": [r.to_dict() for r in regions]}  # fmt: skip
        standby = self._take(spec)
        try:
            try:
                standby.go(request, spec.time_limit_s)
            except OSError:
                standby.cancel()
                raise
            result = standby.wait()
            log = standby.log_path.read_text(encoding="utf-8", errors="replace")
        except (OSError, ValueError) as error:
            why = redact_host_paths(str(error))
            raise ServiceUnavailable(
                f"ERROR: The pre-flight sandbox could not start ({why}); nothing was spent. "
                "Try again shortly."
            ) from error
        finally:
            shutil.rmtree(standby.run_dir, ignore_errors=True)
        if self.warm:
            self._replenish(spec)
        return _verdict(log, nonce, result.timed_out, spec)

    def _take(self, spec: PreflightSpec) -> _SmokeStandby:
        """A warm smoke sandbox for `spec`'s limits, or a cold one started now."""
        with self._lock:
            standby = self._standbys.pop(_limits_key(spec), None)
        if standby is not None and standby.usable:
            return standby
        if standby is not None:
            standby.discard(standby.run_dir)
        return _SmokeStandby(self.runner, self.work_dir, spec)

    def _replenish(self, spec: PreflightSpec) -> None:
        """Start the next check's sandbox now, so that it has imported torch by then."""
        key = _limits_key(spec)
        with self._lock:
            waiting = self._standbys.get(key)
            if self._closed or (waiting is not None and waiting.usable):
                return
            if waiting is not None:
                waiting.discard(waiting.run_dir)
            # On failure the next check starts cold, and reports the problem.
            with contextlib.suppress(OSError):
                self._standbys[key] = _SmokeStandby(self.runner, self.work_dir, spec)

    def close(self) -> None:
        """Stop the warm sandboxes (the service is shutting down)."""
        with self._lock:
            self._closed = True
            standbys, self._standbys = list(self._standbys.values()), {}
        for standby in standbys:
            standby.discard(standby.run_dir)


class _SmokeStandby(Standby):
    """A sandbox running `lossgym.trainer.smoke`, waiting for its one request."""

    def __init__(self, runner: Runner, work_dir: Path, spec: PreflightSpec) -> None:
        self.run_dir = work_dir / f"smoke-{secrets.token_hex(8)}"
        inbox = self.run_dir / "in"
        inbox.mkdir(parents=True)
        self.log_path = self.run_dir / "smoke.log"
        run = RunSpec(
            [PYTHON, "-I", "-m", "lossgym.trainer.smoke",
             "--wait-inbox", str(inbox), "--idle-s", str(IDLE_S)],
            inbox, self.log_path, IDLE_S + spec.time_limit_s + 30,
            base_env({"OMP_NUM_THREADS": "1", "HOME": str(inbox)}),
            mounts=[Mount(inbox)], limits=Limits.of(spec.limits),
        )  # fmt: skip
        super().__init__(runner, run, inbox)


def _limits_key(spec: PreflightSpec) -> str:
    return json.dumps(spec.model_dump(), sort_keys=True)


def _source(lines: list[str], region: Region) -> str:
    return "".join(f"{line}\n" for line in lines[region.start - 1 : region.end])


def _verdict(log: str, nonce: str, timed_out: bool, spec: PreflightSpec) -> str | None:
    if timed_out:
        return (f"{PREFIX}compute_loss did not return within {spec.time_limit_s:.0f} s on a "
                f"small random batch. {FIX}")  # fmt: skip
    if "[sandbox] killed: out of memory" in log:
        limit = Limits.of(spec.limits).memory_text()
        return f"{PREFIX}compute_loss ran out of memory (limit {limit}). {FIX}"
    for line in reversed(log.splitlines()):
        if line.startswith(f"{VERDICT} {nonce} "):
            verdict = json.loads(line.split(" ", 2)[2])
            error = redact_host_paths(str(verdict["error"]))
            return None if verdict["ok"] else f"{PREFIX}{error}. {FIX}"
    tail = " | ".join(redact_host_paths(log).strip().splitlines()[-3:]) or "no output"
    return f"{PREFIX}the smoke run of compute_loss crashed: {tail}"


def _verdict_key(
    files: Mapping[str, str], regions: Mapping[str, Sequence[Region]], spec: PreflightSpec
) -> str:
    """The workspace and the limits it was checked under (a verdict holds for both)."""
    import hashlib

    spans = {path: [r.to_dict() for r in rs] for path, rs in regions.items()}
    blob = json.dumps([files, spans, spec.model_dump()], sort_keys=True)
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()


def _read_only_names(path: str, lines: list[str], regions: Sequence[Region]) -> frozenset[str]:
    """Module-level names bound by the file's read-only lines: config, model, data, loop."""
    kept = list(lines)
    for region in regions:
        for i in range(region.start - 1, region.end):
            kept[i] = ""
    table = symtable.symtable("\n".join(kept) + "\n", path, "exec")
    return frozenset(
        s.get_name() for s in table.get_symbols() if s.is_assigned() or s.is_imported()
    )
