"""Real HTTP servers on loopback that replay a scripted model, in two protocols.

`ScriptedModel` serves OpenAI chat completions (`POST /v1/chat/completions`)
or Anthropic Messages (`POST /v1/messages`). Each request gets the next
scripted turn (text + tool calls) in that protocol's exact wire shape, with a
usage block; every request body is kept for the test to inspect. `faults`
are HTTP statuses to answer before the first real turn (rate limits, 5xx), to
exercise the client's retries; an int in place of a turn is an error reply.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Literal

Protocol = Literal["openai", "anthropic"]
PATHS = {"openai": "/v1/chat/completions", "anthropic": "/v1/messages"}


@dataclass
class ScriptedTurn:
    text: str
    calls: list[tuple[str, dict[str, Any] | str]] = field(default_factory=list)  # str: raw JSON
    input_tokens: int = 1000
    output_tokens: int = 100
    cost: float | None = None  # an OpenRouter-style `usage.cost` (chat completions only)


class ScriptedModel:
    def __init__(
        self,
        protocol: Protocol,
        model: str,
        turns: list[ScriptedTurn | int],
        faults: Sequence[int] = (),
    ) -> None:
        self.protocol, self.model = protocol, model
        self.turns = list(turns)
        self.faults = list(faults)
        self.requests: list[dict[str, Any]] = []  # every body received, faults included
        self.served: list[dict[str, Any]] = []  # the replies of real turns, as sent
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def base_url(self) -> str:
        host, port = self._server.server_address[:2]
        root = f"http://{host}:{port}"
        return root + "/v1" if self.protocol == "openai" else root

    def __enter__(self) -> ScriptedModel:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()

    def reply(self, path: str, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        with self._lock:
            self.requests.append(body)
            if path != PATHS[self.protocol]:
                return 404, {"error": {"message": f"no route {path}"}}
            if self.faults:
                status = self.faults.pop(0)
                return status, {"error": {"type": "scripted_fault", "message": f"fault {status}"}}
            if not self.turns:
                return 500, {"error": {"message": "the script has no more turns"}}
            turn, index = self.turns.pop(0), len(self.served)
            if isinstance(turn, int):  # a scripted error reply in place of a turn
                return turn, {"error": {"type": "scripted_error", "message": f"error {turn}"}}
            wire = (
                _openai(self.model, turn, index)
                if self.protocol == "openai"
                else _anthropic(self.model, turn, index)
            )
            self.served.append(wire)
            return 200, wire

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        scripted = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 (http.server's name)
                length = int(self.headers.get("content-length") or 0)
                body = json.loads(self.rfile.read(length) or b"{}")
                status, reply = scripted.reply(self.path, body)
                data = json.dumps(reply).encode()
                self.send_response(status)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(data)))
                if status == 429:
                    self.send_header("retry-after", "0")
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: object) -> None:
                pass

        return Handler


def call_id(turn: int, k: int) -> str:
    return f"call_{turn}_{k}"


def _openai(model: str, turn: ScriptedTurn, index: int) -> dict[str, Any]:
    calls = [
        {
            "id": call_id(index, k),
            "type": "function",
            "function": {
                "name": name,
                "arguments": args if isinstance(args, str) else json.dumps(args),
            },
        }
        for k, (name, args) in enumerate(turn.calls)
    ]
    message: dict[str, Any] = {"role": "assistant", "content": turn.text or None}
    if calls:
        message["tool_calls"] = calls
    return {
        "id": f"chatcmpl-{index}",
        "object": "chat.completion",
        "created": 1_700_000_000 + index,
        "model": model,
        "choices": [
            {
                "index": 0,
                "message": message,
                "finish_reason": "tool_calls" if calls else "stop",
            }
        ],
        "usage": {
            "prompt_tokens": turn.input_tokens,
            "completion_tokens": turn.output_tokens,
            "total_tokens": turn.input_tokens + turn.output_tokens,
            **({} if turn.cost is None else {"cost": turn.cost}),
        },
    }


def _anthropic(model: str, turn: ScriptedTurn, index: int) -> dict[str, Any]:
    content: list[dict[str, Any]] = [{"type": "text", "text": turn.text}] if turn.text else []
    content += [
        {"type": "tool_use", "id": call_id(index, k), "name": name, "input": args}
        for k, (name, args) in enumerate(turn.calls)
    ]
    return {
        "id": f"msg_{index}",
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": content,
        "stop_reason": "tool_use" if turn.calls else "end_turn",
        "stop_sequence": None,
        "usage": {"input_tokens": turn.input_tokens, "output_tokens": turn.output_tokens},
    }
