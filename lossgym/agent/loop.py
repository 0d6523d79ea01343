"""One agent session: a model drives the tools through LossGym's public API until it ends.

The system prompt is the task description the session starts with (the
editable regions rendered as in the seed transcript). Each model turn's tool
calls go to `POST /tools/call`; the server enforces the step limit and the test
budget, so the loop only follows the session's state. It reminds the model
when it keeps editing without testing and when few steps are left, and when
the model stops on a session that is still open, submits the best valid test.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from lossgym.agent import messages as msg
from lossgym.agent.messages import ToolCall, Usage
from lossgym.agent.providers import Provider
from lossgym.agent.transcript import Transcript
from lossgym.client import Api, ApiError

log = logging.getLogger("lossgym.agent")

KICKOFF = (
    "Begin. Work only through the tools: view and edit the editable regions, test to "
    "measure a change (each test spends one of your test budget), and submit(n=N) the "
    "test you want as final."
)
PENDING = ("queued", "running")


@dataclass
class LoopConfig:
    max_turns: int | None = None  # model requests at most; default: the step budget + 5
    edits_before_reminder: int = 4  # remind after this many edits in a row without a test
    steps_left_warning: int = 3  # remind when this few steps remain
    test_poll_s: float = 5.0  # how often to poll a test the server stopped waiting for


@dataclass
class Outcome:
    session_id: str
    reason: str  # submitted | auto_submitted | step_limit | model_stopped | turn_limit | …
    final: int | None
    usage: Usage
    transcript: str
    turns: int = 0


@dataclass
class SessionState:
    session_id: str
    token: str
    system: str
    messages: list[msg.Message]
    usage: Usage = field(default_factory=Usage)
    edits_since_test: int = 0
    turns: int = 0


class SessionPlayer:
    def __init__(
        self,
        api: Api,
        provider: Provider,
        model: str,
        config: LoopConfig,
        say: Callable[[str], None] = log.info,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.api, self.provider, self.model = api, provider, model
        self.config, self.say, self.sleep = config, say, sleep

    def play(self, state: SessionState, transcript: Transcript) -> Outcome:
        tools = self.api.tools(self.provider.schema_format)
        info = self._info(state)
        max_turns = self.config.max_turns or info["budget_steps"] + 5
        reason = "turn_limit"
        while state.turns < max_turns:
            if info["status"] != "active":
                reason = info.get("ended_reason") or "ended"
                break
            turn = self.provider.complete(state.system, state.messages, tools)
            state.turns += 1
            state.usage.add(turn.usage)
            self._append(state, transcript, turn.message(), turn.usage.as_dict())
            self._report_usage(state, transcript)
            if not turn.tool_calls:
                reason = "model_stopped"
                self.say(
                    f"{state.session_id}: the model stopped ({turn.stop_reason or 'no tool call'})"
                )
                break
            for call in turn.tool_calls:
                self._append(state, transcript, self._run(state, call))
            info = self._info(state)
            reminder = self._reminder(state, info)
            if reminder and info["status"] == "active":
                self._append(state, transcript, msg.user(reminder))
        return self._finish(state, transcript, reason)

    # ── Tools ───────────────────────────────────────────────────────────────

    def _run(self, state: SessionState, call: ToolCall) -> msg.Message:
        if msg.RAW_ARGUMENTS in call.arguments:
            text = f"ERROR: The arguments of {call.name} must be a JSON object; got: "
            return msg.tool_result(call, text + str(call.arguments[msg.RAW_ARGUMENTS])[:500], False)
        body = {"name": call.name, "arguments": call.arguments}
        try:
            reply = self.api.call("POST", "/tools/call", state.token, json=body)
        except ApiError as error:
            if error.status not in (400, 409, 422):
                raise
            self.say(f"{state.session_id}: {call.name} → {_first_line(str(error))}")
            return msg.tool_result(call, str(error), False)
        text = reply["text"]
        if call.name == "test" and reply.get("status") in PENDING:
            text = self._await_test(state, reply["test"])
        if call.name in ("edit", "undo"):
            state.edits_since_test += 1
        elif call.name == "test":
            state.edits_since_test = 0
        self.say(f"{state.session_id}: {call.name} → {_first_line(text)}")
        return msg.tool_result(call, text, True)

    def _await_test(self, state: SessionState, n: int) -> str:
        """The server stopped waiting (its own limit): poll until the report is there."""
        while True:
            info = self.api.call("GET", f"/sessions/{state.session_id}/tests/{n}", state.token)
            if info["status"] not in PENDING:
                return str(info["text"])
            self.sleep(self.config.test_poll_s)

    def _reminder(self, state: SessionState, info: dict[str, Any]) -> str | None:
        notes = []
        tests_left = info["budget_tests"] - info["tests_used"]
        every = self.config.edits_before_reminder
        if tests_left > 0 and state.edits_since_test and state.edits_since_test % every == 0:
            notes.append(
                f"[Reminder: {state.edits_since_test} edits since your last test. Edits are "
                "free, but only a test measures a change; call test when your loss is ready.]"
            )
        steps_left = info["budget_steps"] - info["steps_used"]
        if 0 < steps_left <= self.config.steps_left_warning:
            notes.append(
                f"[Reminder: {steps_left} step(s) left of {info['budget_steps']}. When they run "
                "out the session ends and your best valid test is submitted for you; call "
                "submit(n=N) to choose the final result yourself.]"
            )
        return "\n".join(notes) or None

    # ── The end ─────────────────────────────────────────────────────────────

    def _finish(self, state: SessionState, transcript: Transcript, reason: str) -> Outcome:
        info = self._info(state)
        if info["status"] == "active" and info.get("best_test") is not None:
            n = info["best_test"]
            reply = self.api.call("POST", "/submit", state.token, json={"n": n})
            transcript.write({"type": "auto_submit", "n": n, "text": reply["text"]})
            self.say(f"{state.session_id}: the best valid test, #{n}, is submitted")
            reason = "auto_submitted"
            info = self._info(state)
        elif info["status"] == "active":
            self.say(f"{state.session_id}: ends open: no valid test to submit")
        final = _final_n(info)
        transcript.write({"type": "end", "reason": reason, "final": final, **state.usage.as_dict()})
        self._report_usage(state, transcript)
        return Outcome(
            state.session_id, reason, final, state.usage, str(transcript.path), state.turns
        )

    # ── Records ─────────────────────────────────────────────────────────────

    def _append(
        self,
        state: SessionState,
        transcript: Transcript,
        message: msg.Message,
        usage: dict[str, Any] | None = None,
    ) -> None:
        state.messages.append(message)
        transcript.message(message, usage)

    def _info(self, state: SessionState) -> dict[str, Any]:
        return self.api.call("GET", f"/sessions/{state.session_id}", state.token)

    def _report_usage(self, state: SessionState, transcript: Transcript) -> None:
        body = {"model": self.model, **state.usage.as_dict(), "transcript": str(transcript.path)}
        try:
            self.api.call("POST", f"/sessions/{state.session_id}/usage", state.token, json=body)
        except ApiError as error:
            log.warning("%s: usage not recorded: %s", state.session_id, error)


def _final_n(info: dict[str, Any]) -> int | None:
    final = info.get("final")
    return None if not final else final.get("n")


def _first_line(text: str) -> str:
    line = text.strip().splitlines()[0] if text.strip() else ""
    return line if len(line) <= 120 else line[:117] + "..."
