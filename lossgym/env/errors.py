"""Errors raised by the environment.

`AgentError` is an error an agent can act on: ``str(err)`` is exactly the text
the agent is shown. It always starts with ``ERROR:`` and says what to do
instead. `TaskSpecError` is for operators: a task directory that does not load.
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
