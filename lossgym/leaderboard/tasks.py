"""What the read side needs to know of a task, as an interface.

The leaderboard ranks stored results; it never loads task files itself. The
application hands it a `TaskCatalog` (the env's `TaskCache` is one), so this
room depends on storage only, not on the environment's internals.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Literal, Protocol


class BoardTask(Protocol):
    """One task as the leaderboard sees it."""

    @property
    def name(self) -> str: ...

    @property
    def profiles(self) -> Sequence[str]: ...

    @property
    def default_profile(self) -> str: ...

    @property
    def hidden_metrics(self) -> Sequence[str]: ...

    @property
    def direction(self) -> Literal["minimize", "maximize"]:
        """Which way the primary metric improves."""
        ...

    def primary_metric_key(self, profile: str) -> str: ...

    def diff_from_template(self, files: Mapping[str, str]) -> str:
        """A unified diff from the task's starting workspace to `files`."""
        ...


class TaskCatalog(Protocol):
    def names(self) -> list[str]:
        """The installed tasks' names, in display order."""
        ...

    def board_task(self, name: str) -> BoardTask:
        """The task called `name`; `TaskSpecError` when it does not load."""
        ...
