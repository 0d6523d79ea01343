"""The few public HTTP endpoints a baseline run needs, as any agent would call them."""

from __future__ import annotations

from typing import Any

import httpx

DEFAULT_BASE_URL = "http://127.0.0.1:8000"


class ApiError(Exception):
    """An HTTP error reply; the message is the server's `text`."""

    def __init__(self, status: int, text: str) -> None:
        super().__init__(text)
        self.status = status


class Api:
    """The few public endpoints a baseline run needs."""

    def __init__(
        self, base_url: str, client: httpx.Client | None = None, operator_key: str = ""
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.client = client or httpx.Client(timeout=httpx.Timeout(300.0, connect=10.0))
        self.operator_key = operator_key  # baseline agent names are reserved for the operator

    def call(self, method: str, path: str, token: str | None = None, **kw: Any) -> dict[str, Any]:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        reply = self.client.request(method, self.base_url + path, headers=headers, **kw)
        try:
            body = reply.json()
        except ValueError:
            body = {"text": reply.text}
        if reply.status_code >= 400:
            raise ApiError(reply.status_code, str(body.get("text", body)))
        return body  # type: ignore[no-any-return]

    def leaderboard(self, task: str, profile: str) -> dict[str, Any]:
        return self.call("GET", "/api/leaderboard", params={"task": task, "profile": profile})

    def create_session(self, task: str, agent: str, profile: str, seed: int) -> dict[str, Any]:
        body = {"task": task, "agent": agent, "profile": profile, "seed": seed}
        return self.call("POST", "/sessions", self.operator_key or None, json=body)

    def health(self) -> bool:
        try:
            return self.client.get(f"{self.base_url}/health", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False
