"""Model endpoints through their official SDKs: OpenAI chat completions and Anthropic Messages.

`openai` speaks chat completions with tool calls, so any server that does (vLLM,
SGLang, Ollama, llama.cpp, OpenRouter, …) works through `--base-url`. Both
providers turn the neutral conversation (`messages.py`) into their wire format
on every request and retry rate limits, overloads, 5xx replies and dropped
connections with exponential backoff (honouring `Retry-After`); the SDKs' own
retries are off so there is one policy, logged, in one place.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal, Protocol, TypeVar

from lossgym.agent.messages import RAW_ARGUMENTS, Message, ToolCall, Turn, Usage, parse_arguments
from lossgym.client import backoff_delays

ProviderName = Literal["openai", "anthropic"]
DEFAULT_API_KEY_ENV: dict[str, str] = {"openai": "OPENAI_API_KEY", "anthropic": "ANTHROPIC_API_KEY"}
ANTHROPIC_MAX_TOKENS = 8192  # Messages requires a limit; the SDK has no default

log = logging.getLogger("lossgym.agent")
T = TypeVar("T")


@dataclass(frozen=True)
class ModelConfig:
    provider: ProviderName
    model: str
    api_key: str
    base_url: str | None = None
    max_tokens: int | None = None
    temperature: float | None = None
    price_in_per_mtok: float | None = None  # USD per million input tokens, if not reported
    price_out_per_mtok: float | None = None
    attempts: int = 6
    backoff_s: float = 2.0
    timeout_s: float = 600.0


class Provider(Protocol):
    schema_format: ProviderName  # the shape of GET /tools this provider sends

    def complete(self, system: str, messages: list[Message], tools: list[dict[str, Any]]) -> Turn:
        """One model request on the whole conversation so far."""
        ...


def make_provider(config: ModelConfig, sleep: Callable[[float], None] = time.sleep) -> Provider:
    if config.provider == "openai":
        return OpenAIProvider(config, sleep)
    if config.provider == "anthropic":
        return AnthropicProvider(config, sleep)
    raise ValueError(f"unknown provider {config.provider!r}; use openai or anthropic")


class _Retrying:
    """Retries a request while the endpoint says "later"; other errors go straight up.

    `sdk` is the provider's SDK module: both name their errors alike
    (`APIStatusError`, `APIConnectionError`) and take the same client options.
    """

    def __init__(self, config: ModelConfig, sleep: Callable[[float], None], sdk: Any) -> None:
        self.config, self.sleep, self.sdk = config, sleep, sdk
        self.client_options = {
            "api_key": config.api_key,
            "base_url": config.base_url,
            "max_retries": 0,  # one retry policy: this one
            "timeout": config.timeout_s,
        }

    def _retrying(self, request: Callable[[], T]) -> T:
        delays = backoff_delays(self.config.attempts, self.config.backoff_s, cap_s=60.0)
        for delay in [*delays, None]:
            try:
                return request()
            except (self.sdk.APIStatusError, self.sdk.APIConnectionError) as error:
                status = getattr(error, "status_code", None)
                retryable = status is None or status in (408, 409, 429) or status >= 500
                if delay is None or not retryable:
                    raise
                wait = max(delay, _retry_after(error))
                log.warning("%s: %s; retrying in %.1f s", self.config.model, _short(error), wait)
                self.sleep(wait)
        raise AssertionError("unreachable: the last try returns or raises")

    def _priced(self, usage: Usage, reported_cost: float | None) -> Usage:
        usage.requests = 1
        if reported_cost is not None:
            usage.cost_usd = float(reported_cost)
        elif (
            self.config.price_in_per_mtok is not None or self.config.price_out_per_mtok is not None
        ):
            usage.cost_usd = (
                usage.input_tokens * (self.config.price_in_per_mtok or 0.0)
                + usage.output_tokens * (self.config.price_out_per_mtok or 0.0)
            ) / 1e6
        return usage


class OpenAIProvider(_Retrying):
    schema_format: ProviderName = "openai"

    def __init__(self, config: ModelConfig, sleep: Callable[[float], None] = time.sleep) -> None:
        import openai

        super().__init__(config, sleep, openai)
        self.client = openai.OpenAI(**self.client_options)

    def complete(self, system: str, messages: list[Message], tools: list[dict[str, Any]]) -> Turn:
        wire = [{"role": "system", "content": system}, *map(_openai_message, messages)]
        extra: dict[str, Any] = {}
        if self.config.max_tokens is not None:
            extra["max_tokens"] = self.config.max_tokens
        if self.config.temperature is not None:
            extra["temperature"] = self.config.temperature
        response = self._retrying(
            lambda: self.client.chat.completions.create(
                model=self.config.model, messages=wire, tools=tools, **extra
            )
        )
        if not response.choices:
            raise RuntimeError(f"{self.config.model}: the reply has no choices")
        choice = response.choices[0]
        calls = [
            ToolCall(c.id, c.function.name, parse_arguments(c.function.arguments))
            for c in choice.message.tool_calls or []
            if getattr(c, "function", None) is not None
        ]
        usage = Usage()
        reported = None
        if response.usage is not None:
            usage.input_tokens = response.usage.prompt_tokens or 0
            usage.output_tokens = response.usage.completion_tokens or 0
            reported = (response.usage.model_extra or {}).get("cost")  # OpenRouter, LiteLLM
        return Turn(
            choice.message.content or "", calls, self._priced(usage, reported), choice.finish_reason
        )


class AnthropicProvider(_Retrying):
    schema_format: ProviderName = "anthropic"

    def __init__(self, config: ModelConfig, sleep: Callable[[float], None] = time.sleep) -> None:
        import anthropic

        super().__init__(config, sleep, anthropic)
        self.client = anthropic.Anthropic(**self.client_options)

    def complete(self, system: str, messages: list[Message], tools: list[dict[str, Any]]) -> Turn:
        extra: dict[str, Any] = {}
        if self.config.temperature is not None:
            extra["temperature"] = self.config.temperature
        response = self._retrying(
            lambda: self.client.messages.create(
                model=self.config.model,
                max_tokens=self.config.max_tokens or ANTHROPIC_MAX_TOKENS,
                system=system,
                messages=_anthropic_messages(messages),
                tools=tools,
                **extra,
            )
        )
        texts = [b.text for b in response.content if b.type == "text"]
        calls = [
            ToolCall(b.id, b.name, dict(b.input) if isinstance(b.input, dict) else {})
            for b in response.content
            if b.type == "tool_use"
        ]
        u = response.usage
        cached = (u.cache_creation_input_tokens or 0) + (u.cache_read_input_tokens or 0)
        usage = Usage(input_tokens=u.input_tokens + cached, output_tokens=u.output_tokens)
        return Turn("".join(texts), calls, self._priced(usage, None), response.stop_reason or "")


def _openai_message(message: Message) -> dict[str, Any]:
    if message["role"] == "tool":
        return {
            "role": "tool",
            "tool_call_id": message["tool_call_id"],
            "content": message["content"],
        }
    if message["role"] == "assistant" and message.get("tool_calls"):
        calls = [
            {
                "id": c["id"],
                "type": "function",
                "function": {"name": c["name"], "arguments": _argument_text(c["arguments"])},
            }
            for c in message["tool_calls"]
        ]
        return {"role": "assistant", "content": message["content"] or None, "tool_calls": calls}
    return {"role": message["role"], "content": message["content"]}


def _anthropic_messages(messages: list[Message]) -> list[dict[str, Any]]:
    """Tool results and any reminder after them form one user turn, results first."""
    out: list[dict[str, Any]] = []
    for message in messages:
        if message["role"] == "assistant":
            blocks: list[dict[str, Any]] = []
            if message["content"]:
                blocks.append({"type": "text", "text": message["content"]})
            for c in message.get("tool_calls", []):
                args = {} if RAW_ARGUMENTS in c["arguments"] else c["arguments"]
                blocks.append({"type": "tool_use", "id": c["id"], "name": c["name"], "input": args})
            out.append({"role": "assistant", "content": blocks})
            continue
        if message["role"] == "tool":
            block = {
                "type": "tool_result",
                "tool_use_id": message["tool_call_id"],
                "content": message["content"],
                "is_error": not message.get("ok", True),
            }
        else:
            block = {"type": "text", "text": message["content"]}
        if out and out[-1]["role"] == "user":
            out[-1]["content"].append(block)
        else:
            out.append({"role": "user", "content": [block]})
    return out


def _argument_text(arguments: dict[str, Any]) -> str:
    if RAW_ARGUMENTS in arguments:
        return str(arguments[RAW_ARGUMENTS])
    return json.dumps(arguments)


def _retry_after(error: Exception) -> float:
    response = getattr(error, "response", None)
    value = response.headers.get("retry-after") if response is not None else None
    try:
        return min(float(value), 120.0) if value else 0.0
    except ValueError:
        return 0.0


def _short(error: Exception) -> str:
    status = getattr(error, "status_code", None)
    name = type(error).__name__
    return f"{name} (HTTP {status})" if status else name
