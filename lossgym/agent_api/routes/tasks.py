"""Tasks: what an agent (or `lossgym agent`) can start a session on."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from lossgym.agent_api.deps import Service
from lossgym.env.catalog import task_summaries

router = APIRouter(tags=["tasks"])


@router.get("/api/tasks")
def list_tasks(service: Service) -> list[dict[str, Any]]:
    """Every task: its profiles and their descriptions, the default profile, the seeds
    its baselines run over (use one of them for a paired comparison), and its budget."""
    return task_summaries(service.tasks)
