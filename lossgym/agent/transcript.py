"""A run's transcript: one JSONL file per session, `<dir>/<session_id>.jsonl`.

Line 1 is the `session` record (server, session id, token, model, task, seed);
then `system` (the prompt), one `message` per conversation message (assistant
ones carry the request's `usage`), `auto_submit` if the harness submitted, and
`end`. The file holds the session's token, so it is created owner-only (0600).
`--resume` reads it back and goes on from the last message.
"""

from __future__ import annotations

import json
import os
import threading
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from lossgym.agent.messages import Message


class TranscriptError(Exception):
    """A transcript that is missing or cannot be resumed; the message says why."""


class Transcript:
    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()

    @classmethod
    def create(cls, directory: Path, header: dict[str, Any], system: str) -> Transcript:
        directory.mkdir(parents=True, exist_ok=True)
        path = directory / f"{header['session_id']}.jsonl"
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        os.close(fd)
        transcript = cls(path)
        transcript.write({"type": "session", **header})
        transcript.write({"type": "system", "content": system})
        return transcript

    def write(self, record: dict[str, Any]) -> None:
        line = json.dumps({**record, "at": _now()}, ensure_ascii=False)
        with self._lock, self.path.open("a", encoding="utf-8") as out:
            out.write(line + "\n")

    def message(self, message: Message, usage: dict[str, Any] | None = None) -> None:
        record: dict[str, Any] = {"type": "message", "message": message}
        if usage is not None:
            record["usage"] = usage
        self.write(record)

    def records(self) -> list[dict[str, Any]]:
        try:
            lines = self.path.read_text(encoding="utf-8").splitlines()
        except FileNotFoundError:
            raise TranscriptError(f"no transcript at {self.path}") from None
        try:
            return [json.loads(line) for line in lines if line.strip()]
        except ValueError as error:
            raise TranscriptError(f"{self.path} is not valid JSONL: {error}") from None


class Resumed:
    """What a transcript holds: its session header, the system prompt, the messages."""

    def __init__(self, transcript: Transcript) -> None:
        records = transcript.records()
        if not records or records[0].get("type") != "session":
            raise TranscriptError(f"{transcript.path} does not start with a session record")
        self.header: dict[str, Any] = records[0]
        systems = [r["content"] for r in records if r.get("type") == "system"]
        if not systems:
            raise TranscriptError(f"{transcript.path} has no system prompt")
        self.system: str = systems[0]
        self.messages: list[Message] = [r["message"] for r in records if r.get("type") == "message"]
        self.usage = [r["usage"] for r in records if r.get("type") == "message" and "usage" in r]


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")
