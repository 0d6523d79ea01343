"""The public HTTP API as a client sees it: what the baseline runner and `lossgym agent` call.

Both drive sessions exactly as any outside agent would; neither imports the
service. Replies that mean "not now" (429 rate limited, 502/503/504, a dropped
connection before a reply) are retried with exponential backoff; every other
error is an `ApiError` whose message is the server's `text`.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

import httpx

DEFAULT_BASE_URL = "http://127.0.0.1:8000"
# A POST is resent only on replies that say nothing was done (rate limited, overloaded);
# a GET also on gateway errors, after which a POST might have been carried out.
NOT_DONE_STATUSES = frozenset({429, 503})
RETRY_STATUSES = NOT_DONE_STATUSES | {502, 504}

log = logging.getLogger("lossgym.client")


class ApiError(Exception):
    """An HTTP error reply; the message is the server's `text`."""

    def __init__(self, status: int, text: str) -> None:
        super().__init__(text)
        self.status = status


def backoff_delays(attempts: int, base_s: float, cap_s: float) -> list[float]:
    """The waits between `attempts` tries: base, 2·base, 4·base, … capped at cap_s."""
    return [min(cap_s, base_s * 2**i) for i in range(max(attempts - 1, 0))]


class Api:
    """The public endpoints, with a session's bearer token where one is needed."""

    def __init__(
        self,
        base_url: str,
        client: httpx.Client | None = None,
        operator_key: str = "",
        attempts: int = 5,
        backoff_s: float = 1.0,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.client = client or httpx.Client(timeout=httpx.Timeout(300.0, connect=10.0))
        self.operator_key = operator_key  # baseline agent names are reserved for the operator
        self.delays = backoff_delays(attempts, backoff_s, cap_s=30.0)
        self.sleep = sleep

    def request(
        self, method: str, path: str, token: str | None = None, **kw: Any
    ) -> httpx.Response:
        """One request, retried while the reply says "not now" and resending is safe."""
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        retry_on = RETRY_STATUSES if method == "GET" else NOT_DONE_STATUSES
        for delay in [*self.delays, None]:
            try:
                reply = self.client.request(method, self.base_url + path, headers=headers, **kw)
            except httpx.TransportError as error:
                if delay is None or not _safe_to_resend(error):
                    raise
                log.warning("%s %s: %s; retrying in %.1f s", method, path, error, delay)
                self.sleep(delay)
                continue
            if reply.status_code in retry_on and delay is not None:
                log.warning(
                    "%s %s: HTTP %d; retrying in %.1f s", method, path, reply.status_code, delay
                )
                self.sleep(delay)
                continue
            return reply
        raise AssertionError("unreachable: the last try returns or raises")

    def call(self, method: str, path: str, token: str | None = None, **kw: Any) -> dict[str, Any]:
        """A request whose reply is a JSON object; an error reply raises `ApiError`."""
        body = _json(self.request(method, path, token, **kw))
        if not isinstance(body, dict):
            raise ApiError(
                502, f"{method} {path}: expected a JSON object, got {type(body).__name__}"
            )
        return body

    def call_list(self, method: str, path: str, **kw: Any) -> list[Any]:
        """A request whose reply is a JSON list (a public read: no token)."""
        body = _json(self.request(method, path, **kw))
        if not isinstance(body, list):
            raise ApiError(502, f"{method} {path}: expected a JSON list, got {type(body).__name__}")
        return body

    def tools(self, fmt: str) -> list[dict[str, Any]]:
        """The tool schemas, in OpenAI or Anthropic shape."""
        return self.call_list("GET", "/tools", params={"format": fmt})

    def leaderboard(self, task: str, profile: str) -> dict[str, Any]:
        return self.call("GET", "/api/leaderboard", params={"task": task, "profile": profile})

    def create_session(
        self, task: str, agent: str, profile: str | None, seed: int | None
    ) -> dict[str, Any]:
        body = {"task": task, "agent": agent, "profile": profile, "seed": seed}
        return self.call("POST", "/sessions", self.operator_key or None, json=body)

    def health(self) -> bool:
        try:
            return self.client.get(f"{self.base_url}/health", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False


def _safe_to_resend(error: httpx.TransportError) -> bool:
    """Only errors raised before the request reached the server: resending cannot act twice."""
    return isinstance(error, httpx.ConnectError | httpx.ConnectTimeout)


def _json(reply: httpx.Response) -> Any:
    try:
        body = reply.json()
    except ValueError:
        body = {"text": reply.text}
    if reply.status_code >= 400:
        text = body.get("text", body) if isinstance(body, dict) else body
        raise ApiError(reply.status_code, str(text))
    return body
