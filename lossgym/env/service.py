"""The episode service: every agent tool call goes through here.

Each call is one database transaction that loads the session, checks it is
active, counts the step, applies the tool, and records the exact text the
agent is shown. Tool failures the agent can act on are `AgentError`s: they are
recorded and returned as text, and change nothing (a savepoint undoes any
partial write). `test` is the one tool that outlives its transaction: it
queues a job, commits (spending the budget exactly once), then optionally
waits for the worker and rewrites the recorded text with the report.
"""

from __future__ import annotations

import hashlib
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from sqlalchemy.orm import Session

from lossgym.config import Settings
from lossgym.env import episode, reports, texts
from lossgym.env.catalog import TaskCache
from lossgym.env.limits import PreflightSpec
from lossgym.env.task import Task
from lossgym.env.tools import (
    TOOLS,
    EditArgs,
    SubmitArgs,
    UndoArgs,
    ViewArgs,
    parse_tool_args,
    run_edit,
    run_undo,
    run_view,
    tool_schemas,
)
from lossgym.env.usage import UsageRecorder
from lossgym.env.workspace import Region, Workspace
from lossgym.errors import (
    AgentError,
    Forbidden,
    NotFound,
    RateLimited,
    SessionEnded,
    TaskSpecError,
    Unauthorized,
)
from lossgym.store import queries
from lossgym.store.db import Database
from lossgym.store.models import SessionRow, ToolCallRow

BASELINE_PREFIX = "baseline:"


@dataclass
class ToolResult:
    ok: bool
    text: str
    data: dict[str, Any] = field(default_factory=dict)


Action = Callable[[Session, SessionRow, Task], tuple[str, dict[str, Any]]]


class PreflightCheck(Protocol):
    """The free pre-flight of a workspace (lossgym.sandbox.preflight.Preflight)."""

    def check(
        self,
        session_id: str,
        files: dict[str, str],
        regions: dict[str, list[Region]],
        spec: PreflightSpec,
    ) -> None:
        """Raise AgentError (RateLimited, too) with the agent's text unless it passes."""
        ...

    def close(self) -> None:
        """Stop whatever it keeps running between checks."""
        ...


class EpisodeService:
    def __init__(
        self, settings: Settings, db: Database, tasks: TaskCache, preflight: PreflightCheck
    ) -> None:
        self.settings = settings
        self.db = db
        self.tasks = tasks
        self.preflight_check = preflight
        self.usage = UsageRecorder(db)  # POST /sessions/{id}/usage
        self._token_sessions: dict[str, str] = {}  # token hash -> session id

    # ── Sessions ────────────────────────────────────────────────────────────

    def create_session(
        self,
        task_name: str,
        agent: str,
        profile: str | None = None,
        seed: int | None = None,
        operator: bool = True,
    ) -> dict[str, Any]:
        """Start an episode; raises AgentError for an unknown task or profile.

        Agent names starting with `baseline:` feed the reference statistics every
        row is compared with, so only the operator may use them.
        """
        if agent.startswith(BASELINE_PREFIX) and not operator:
            raise Forbidden(
                f"Agent names starting with {BASELINE_PREFIX!r} are reserved for the operator's "
                "baseline runs; send the operator key, or choose another name."
            )
        task, profile, workspace = self._fresh(task_name, profile)
        token = secrets.token_urlsafe(24)
        session = SessionRow(
            id=secrets.token_hex(8),
            token_hash=_hash(token),
            task=task.spec.name,
            profile=profile,
            agent=agent,
            seed=task.spec.seeds[0] if seed is None else seed,
            budget_tests=task.spec.budget.tests,
            budget_steps=task.spec.budget.steps,
            workspace=workspace.to_state(),
        )
        with self.db.transaction() as db:
            db.add(session)
            db.flush()
            self._save_revision(db, session, workspace)
        return {
            "session_id": session.id,
            "token": token,
            "task": session.task,
            "profile": profile,
            "description": self._description(task, profile, workspace),
            "workspace": {path: workspace.render_listing(path) for path in workspace.files},
            "regions": _regions(workspace),
            "tools": tool_schemas("openai"),
        }

    def task_description(self, task_name: str, profile: str | None = None) -> str:
        """What an agent reads first: the `description` a new session of this task gets."""
        return self._description(*self._fresh(task_name, profile))

    def _fresh(self, task_name: str, profile: str | None) -> tuple[Task, str, Workspace]:
        """A task, its checked profile and a new workspace: what a session starts from."""
        task = self._task_for_agent(task_name)
        profile = _known_profile(task, profile)
        return task, profile, task.new_workspace(max_content_bytes=self.settings.max_content_bytes)

    def session_for_token(self, token: str) -> str:
        """The session a token opens; a token never changes owner, so hits are cached."""
        token_hash = _hash(token)
        found = self._token_sessions.get(token_hash)
        if found is not None:
            return found
        with self.db.read() as db:
            row = queries.session_by_token_hash(db, token_hash)
            if row is None:
                raise Unauthorized("Unknown or invalid token.")
            self._token_sessions[token_hash] = row.id
            return row.id

    # ── Tools ───────────────────────────────────────────────────────────────

    def call(self, session_id: str, name: str, arguments: Any, wait: bool = True) -> ToolResult:
        """Run tool `name` (see `TOOLS`): the one path every transport takes.

        `arguments` is a raw JSON object or the tool's parsed argument model; bad
        arguments are an `AgentError`. `wait` applies to the tool that runs a job.
        """
        tool = TOOLS.get(name)
        args = parse_tool_args(name, arguments)
        assert tool is not None  # parse_tool_args refuses unknown names
        if tool.waits:
            return getattr(self, name)(session_id, wait=wait)  # type: ignore[no-any-return]
        return getattr(self, name)(session_id, args)  # type: ignore[no-any-return]

    def edit(self, session_id: str, args: EditArgs) -> ToolResult:
        def action(db: Session, session: SessionRow, task: Task) -> tuple[str, dict[str, Any]]:
            workspace = self._workspace(session)
            text = run_edit(workspace, args)
            self._save_revision(db, session, workspace)
            return text, {"regions": _regions(workspace)}

        return self._tool(session_id, "edit", args.model_dump(exclude_none=True), action)

    def undo(self, session_id: str, args: UndoArgs) -> ToolResult:
        def action(db: Session, session: SessionRow, task: Task) -> tuple[str, dict[str, Any]]:
            workspace = self._workspace(session)
            text = run_undo(workspace, args)
            self._save_revision(db, session, workspace)
            return text, {"regions": _regions(workspace)}

        return self._tool(session_id, "undo", args.model_dump(), action)

    def view(self, session_id: str, args: ViewArgs) -> ToolResult:
        def action(db: Session, session: SessionRow, task: Task) -> tuple[str, dict[str, Any]]:
            workspace = self._workspace(session)
            text = run_view(workspace, args)
            return text, {"regions": _regions(workspace)}

        return self._tool(session_id, "view", args.model_dump(exclude_none=True), action)

    def preflight(self, session_id: str) -> ToolResult:
        """The free pre-flight of `test`, on its own: nothing is queued, spent or recorded."""
        _, problem = self._preflight(session_id)
        if problem is not None:
            return ToolResult(False, problem.text)
        return ToolResult(True, texts.PREFLIGHT_PASSED)

    def test(self, session_id: str, wait: bool = True) -> ToolResult:
        # Pre-flight runs outside the write transaction: it takes seconds.
        checked_hash, problem = self._preflight(session_id)

        def action(db: Session, session: SessionRow, task: Task) -> tuple[str, dict[str, Any]]:
            if problem is not None:
                raise problem  # broken or forbidden code costs no test
            if self._workspace(session).content_hash() != checked_hash:
                raise AgentError(
                    "ERROR: The workspace changed while it was being checked; call test again."
                )
            if session.tests_used >= session.budget_tests:
                valid = [t.n for t in queries.tests_of(db, session.id) if t.valid]
                raise AgentError(
                    texts.budget_exhausted(session.tests_used, session.budget_tests, valid)
                )
            session.tests_used += 1
            test = queries.add_test_with_job(db, session, queries.latest_revision(db, session.id))
            return texts.test_pending(test.n, "queued", session.id, 0.0), {"test": test.n}

        result = self._tool(session_id, "test", {"wait": wait}, action)
        if not result.ok or not wait:
            return result
        return self._await_test(session_id, result)

    def submit(self, session_id: str, args: SubmitArgs) -> ToolResult:
        repeat = self._repeated_submit(session_id, args.n)
        if repeat is not None:
            return repeat

        def action(db: Session, session: SessionRow, task: Task) -> tuple[str, dict[str, Any]]:
            test = episode.submittable(db, session, args.n)
            queries.add_final(db, session.id, test, kind="submitted")
            episode.end_session(db, task, session, "submitted")
            views = episode.stage_views(task, session.profile, test)
            text = texts.submit_report(test.n, views, task.spec.hidden_metrics)
            return text, {"final": test.n}

        return self._tool(session_id, "submit", args.model_dump(), action)

    def schemas(self, fmt: str) -> list[dict[str, Any]]:
        return tool_schemas(fmt)  # type: ignore[arg-type]

    # ── Reading ─────────────────────────────────────────────────────────────

    def session_info(self, session_id: str) -> dict[str, Any]:
        with self.db.read() as db:
            session = self._get(db, session_id)
            return reports.session_info(db, session, self.tasks.get(session.task))

    def test_info(self, session_id: str, n: int) -> dict[str, Any]:
        with self.db.read() as db:
            session = self._get(db, session_id)
            return reports.test_info(db, session, self.tasks.get(session.task), n)

    # ── Internals ───────────────────────────────────────────────────────────

    def _tool(
        self, session_id: str, tool: str, arguments: dict[str, Any], action: Action
    ) -> ToolResult:
        with self.db.transaction() as db:
            session = self._get(db, session_id)
            if session.status != "active":
                raise SessionEnded(_ended_text(session))
            task = self.tasks.get(session.task)
            session.steps_used += 1
            try:
                with db.begin_nested():
                    text, data = action(db, session, task)
                ok = True
            except AgentError as error:
                text, data, ok = str(error), {}, False
            if session.status == "active" and session.steps_used >= session.budget_steps:
                episode.end_session(db, task, session, "step_limit")
                text += (
                    f"\n\n[Session ended: step limit reached ({session.steps_used}/"
                    f"{session.budget_steps}). Your best valid test is submitted automatically.]"
                )
            call = queries.add_tool_call(db, session_id, tool, arguments, ok, text)
            db.flush()
            data["tool_call_id"] = call.id
        return ToolResult(ok, text, data)

    def _await_test(self, session_id: str, queued: ToolResult) -> ToolResult:
        n = queued.data["test"]
        deadline = time.monotonic() + self.settings.test_wait_s
        while not self._test_finished(session_id, n) and time.monotonic() < deadline:
            time.sleep(0.5)  # a poll is a read: it never waits for, or holds up, a writer
        with self.db.transaction() as db:
            session = self._get(db, session_id)
            test = queries.get_test(db, session_id, n)
            assert test is not None
            text = reports.test_text(db, session, test, self.tasks.get(session.task))
            db.get_one(ToolCallRow, queued.data["tool_call_id"]).text = text
            return ToolResult(True, text, {**queued.data, "status": test.status})

    def _test_finished(self, session_id: str, n: int) -> bool:
        with self.db.read() as db:
            test = queries.get_test(db, session_id, n)
            return test is not None and test.status in episode.FINISHED

    def _preflight(self, session_id: str) -> tuple[str, AgentError | None]:
        """Check the current workspace (outside any transaction: the smoke run takes seconds).

        A rate-limited check is raised, not returned: it is not the code's fault,
        so /test must not record it as a failed pre-flight.
        """
        with self.db.read() as db:
            session = self._get(db, session_id)
            if session.status != "active":
                raise SessionEnded(_ended_text(session))
            workspace = self._workspace(session)
            spec = self.tasks.get(session.task).spec.preflight
        regions = {path: workspace.regions_of(path) for path in workspace.files}
        try:
            self.preflight_check.check(session_id, dict(workspace.files), regions, spec)
        except RateLimited:
            raise
        except AgentError as error:
            return workspace.content_hash(), error
        return workspace.content_hash(), None

    def _repeated_submit(self, session_id: str, n: int) -> ToolResult | None:
        """A second submit of the already-final test answers the same; it is idempotent."""
        with self.db.read() as db:
            session = self._get(db, session_id)
            final = queries.get_final(db, session_id)
            if final is None or final.kind != "submitted":
                return None
            test = queries.get_test_by_id(db, final.test_id)
            if test.n != n:
                raise SessionEnded(
                    f"ERROR: Test #{test.n} is already your final result; the session has ended."
                )
            task = self.tasks.get(session.task)
            views = episode.stage_views(task, session.profile, test)
            return ToolResult(
                True, texts.submit_report(n, views, task.spec.hidden_metrics), {"final": n}
            )

    def _get(self, db: Session, session_id: str) -> SessionRow:
        session = queries.get_session(db, session_id)
        if session is None:
            raise NotFound(f"Unknown session {session_id!r}.")
        return session

    def _task_for_agent(self, name: str) -> Task:
        try:
            return self.tasks.get(name)
        except TaskSpecError as error:
            raise AgentError(f"ERROR: {error}") from error

    def _workspace(self, session: SessionRow) -> Workspace:
        return Workspace.from_state(session.workspace)

    def _save_revision(self, db: Session, session: SessionRow, workspace: Workspace) -> None:
        session.workspace = workspace.to_state()
        queries.add_revision(
            db, session.id, dict(workspace.files), _regions(workspace), workspace.content_hash()
        )

    def _description(self, task: Task, profile: str, workspace: Workspace) -> str:
        listings = "\n\n".join(workspace.render_listing(path) for path in workspace.files)
        return f"Task: {task.spec.name}\n\n{task.render_description(profile)}\n\n{listings}"


def _regions(workspace: Workspace) -> dict[str, list[dict[str, Any]]]:
    return {path: [r.to_dict() for r in workspace.regions_of(path)] for path in workspace.files}


def _known_profile(task: Task, profile: str | None) -> str:
    profile = profile or task.spec.default_profile
    if profile not in task.spec.profiles:
        known = ", ".join(sorted(task.spec.profiles))
        raise AgentError(
            f"ERROR: Unknown profile {profile!r} for task {task.name}. Profiles: {known}."
        )
    return profile


def _ended_text(session: SessionRow) -> str:
    reason = {
        "submitted": "you submitted a final result",
        "step_limit": "the step limit was reached",
    }
    why = reason.get(session.ended_reason or "", session.ended_reason or "it was stopped")
    return f"ERROR: This session has ended ({why}); no more tool calls are accepted."


def _hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()
