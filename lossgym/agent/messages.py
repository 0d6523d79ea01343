"""The conversation in one provider-neutral shape, as the transcript stores it.

A conversation is a list of plain dicts (JSON as written to the transcript):

- `{"role": "user", "content": str}`
- `{"role": "assistant", "content": str, "tool_calls": [{"id", "name", "arguments"}]}`
  where `arguments` is the parsed JSON object the model sent (or, when the model
  sent something that is not a JSON object, `{"_raw": the text}`)
- `{"role": "tool", "tool_call_id": str, "name": str, "content": str, "ok": bool}`

Each provider converts this list to its own wire format on every request, so a
run resumed from its transcript continues exactly where it stopped.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

Message = dict[str, Any]
RAW_ARGUMENTS = "_raw"  # key under which unparseable tool arguments are kept


@dataclass
class ToolCall:
    id: str
    name: str
    arguments: dict[str, Any]

    def as_dict(self) -> dict[str, Any]:
        return {"id": self.id, "name": self.name, "arguments": self.arguments}


@dataclass
class Usage:
    """Tokens and cost of model requests; cost is None while no request reported or priced it."""

    input_tokens: int = 0
    output_tokens: int = 0
    requests: int = 0
    cost_usd: float | None = None

    def add(self, other: Usage) -> None:
        self.input_tokens += other.input_tokens
        self.output_tokens += other.output_tokens
        self.requests += other.requests
        if other.cost_usd is not None:
            self.cost_usd = (self.cost_usd or 0.0) + other.cost_usd

    def as_dict(self) -> dict[str, Any]:
        return {
            "input_tokens": self.input_tokens,
            "output_tokens": self.output_tokens,
            "requests": self.requests,
            "cost_usd": None if self.cost_usd is None else round(self.cost_usd, 6),
        }


@dataclass
class Turn:
    """One model reply: its text, its tool calls, and what the request cost."""

    text: str
    tool_calls: list[ToolCall] = field(default_factory=list)
    usage: Usage = field(default_factory=Usage)
    stop_reason: str = ""

    def message(self) -> Message:
        calls = [c.as_dict() for c in self.tool_calls]
        return {"role": "assistant", "content": self.text, "tool_calls": calls}


def parse_arguments(raw: str | None) -> dict[str, Any]:
    """A model's argument string as an object; anything else is kept raw for the error text."""
    if not raw:
        return {}
    try:
        value = json.loads(raw)
    except ValueError:
        return {RAW_ARGUMENTS: raw}
    return value if isinstance(value, dict) else {RAW_ARGUMENTS: raw}


def user(content: str) -> Message:
    return {"role": "user", "content": content}


def tool_result(call: ToolCall, content: str, ok: bool) -> Message:
    return {
        "role": "tool",
        "tool_call_id": call.id,
        "name": call.name,
        "content": content,
        "ok": ok,
    }
