"""Loaded tasks, cached by name: task specs are read once per process."""

from __future__ import annotations

import threading
from pathlib import Path

from lossgym.env.task import Task, load_task


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
