"""Loaded tasks, cached by name: task specs are read once per process.

`TaskCache` is also the leaderboard's `TaskCatalog`: `board_task` gives the
read side what it needs of a task (profiles, metric, template diff) without
handing it the environment's internals.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from lossgym.env.task import Task, list_tasks, load_task
from lossgym.env.workspace import Workspace


class TaskCache:
    def __init__(self, tasks_dir: Path) -> None:
        self.tasks_dir = tasks_dir
        self._tasks: dict[str, Task] = {}
        self._lock = threading.Lock()

    def get(self, name: str) -> Task:
        """The task called `name`; TaskSpecError when it is missing or invalid."""
        with self._lock:
            if name not in self._tasks:
                self._tasks[name] = load_task(self.tasks_dir, name)
            return self._tasks[name]

    def names(self) -> list[str]:
        return list_tasks(self.tasks_dir)

    def board_task(self, name: str) -> BoardTask:
        return BoardTask(self.get(name))


@dataclass(frozen=True)
class BoardTask:
    """A task as the leaderboard sees it (satisfies `lossgym.leaderboard.tasks.BoardTask`)."""

    task: Task

    @property
    def name(self) -> str:
        return self.task.name

    @property
    def profiles(self) -> list[str]:
        return list(self.task.spec.profiles)

    @property
    def default_profile(self) -> str:
        return self.task.spec.default_profile

    @property
    def hidden_metrics(self) -> list[str]:
        return list(self.task.spec.hidden_metrics)

    @property
    def direction(self) -> Literal["minimize", "maximize"]:
        return self.task.spec.primary_metric.direction

    def primary_metric_key(self, profile: str) -> str:
        return self.task.primary_metric_key(profile)

    def diff_from_template(self, files: Mapping[str, str]) -> str:
        return Workspace(dict(files)).diff_against(self.task.workspace_files())


def task_summaries(cache: TaskCache) -> list[dict[str, object]]:
    """Every task's public facts: name, profiles (with their descriptions), default, seeds."""
    out: list[dict[str, object]] = []
    for name in cache.names():
        spec = cache.get(name).spec
        profiles = {p: s.description for p, s in spec.profiles.items()}
        out.append(
            {
                "name": spec.name,
                "profiles": profiles,
                "default_profile": spec.default_profile,
                "seeds": list(spec.seeds),
                "budget": {"tests": spec.budget.tests, "steps": spec.budget.steps},
            }
        )
    return out
