"""The errors every room shares; torch-free and dependency-free, at the bottom of the house.

`AgentError` is an error an agent can act on: ``str(err)`` is exactly the text
the agent is shown. It always starts with ``ERROR:`` and says what to do
instead. `TaskSpecError` is for operators: a task directory that does not load.
The rest name a condition; `lossgym.agent_api.errors` maps each to its HTTP
status, in one place.
"""

from __future__ import annotations

AGENT_ERROR_PREFIX = "ERROR: "


class AgentError(Exception):
    """An error caused by an agent's input; its message is shown to the agent verbatim."""

    def __init__(self, message: str) -> None:
        text = message if message.startswith("ERROR:") else AGENT_ERROR_PREFIX + message
        super().__init__(text)

    @property
    def text(self) -> str:
        """The text shown to the agent."""
        return str(self.args[0])


class TaskSpecError(Exception):
    """A task directory (task.yaml, description, baselines, sources) is invalid."""


class RateLimited(AgentError):
    """Too many calls of a free but costly kind (HTTP 429); the text says when to retry."""


class ServiceUnavailable(Exception):
    """The service cannot do it now, through no fault of the agent (HTTP 503); nothing
    was spent or changed. The message is the agent's text."""


class NotFound(Exception):
    """An unknown session, test, task or profile (HTTP 404)."""


class Unauthorized(Exception):
    """A missing or wrong token (HTTP 401)."""


class Forbidden(Exception):
    """An operator-only action without the operator key (HTTP 403)."""


class SessionEnded(Exception):
    """A tool call on a session that has ended (HTTP 409); the message is the agent's text."""


class Conflict(Exception):
    """A request that contradicts what is recorded (HTTP 409), e.g. usage totals that shrink;
    the message is the caller's text."""
