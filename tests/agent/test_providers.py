"""The two providers against scripted loopback servers: wire shapes, usage and cost, retries."""

from __future__ import annotations

import pytest

from lossgym.agent import messages as msg
from lossgym.agent.providers import ModelConfig, make_provider
from tests.agent.scripted_models import ScriptedModel, ScriptedTurn

TOOLS = {
    "openai": [{"type": "function", "function": {"name": "view", "description": "d",
                "parameters": {"type": "object", "properties": {}}}}],
    "anthropic": [{"name": "view", "description": "d",
                   "input_schema": {"type": "object", "properties": {}}}],
}  # fmt: skip


def _config(model: ScriptedModel, **kw: object) -> ModelConfig:
    return ModelConfig(model.protocol, model.model, "key", model.base_url, backoff_s=0.0, **kw)  # type: ignore[arg-type]


def test_reported_cost_wins_and_unparseable_arguments_go_back_verbatim() -> None:
    turn = ScriptedTurn("", [("view", "{not json")], input_tokens=10, output_tokens=2, cost=0.25)
    with ScriptedModel("openai", "m", [turn, ScriptedTurn("ok")]) as model:
        provider = make_provider(_config(model, price_in_per_mtok=1e6))
        first = provider.complete("sys", [msg.user("go")], TOOLS["openai"])
        assert first.usage.as_dict() == {
            "input_tokens": 10, "output_tokens": 2, "requests": 1, "cost_usd": 0.25,
        }  # fmt: skip
        (call,) = first.tool_calls
        assert call.arguments == {msg.RAW_ARGUMENTS: "{not json"}
        history = [msg.user("go"), first.message(), msg.tool_result(call, "ERROR: x", False)]
        provider.complete("sys", history, TOOLS["openai"])
    sent = model.requests[1]["messages"]
    assert sent[2]["tool_calls"][0]["function"]["arguments"] == "{not json"
    assert sent[3] == {"role": "tool", "tool_call_id": call.id, "content": "ERROR: x"}


def test_prices_give_the_cost_and_tool_results_form_one_user_turn() -> None:
    calls = [("view", {"filename": "a"}), ("view", {"filename": "b"})]
    turns = [ScriptedTurn("look", calls, input_tokens=1000, output_tokens=100), ScriptedTurn("")]
    with ScriptedModel("anthropic", "m", turns) as model:
        provider = make_provider(_config(model, price_in_per_mtok=3.0, price_out_per_mtok=15.0))
        first = provider.complete("sys", [msg.user("go")], TOOLS["anthropic"])
        assert first.usage.cost_usd == pytest.approx(0.0045)
        results = [msg.tool_result(c, f"text {c.id}", True) for c in first.tool_calls]
        provider.complete("sys", [msg.user("go"), first.message(), *results, msg.user("hint")],
                          TOOLS["anthropic"])  # fmt: skip
    sent = model.requests[1]["messages"]
    assert [m["role"] for m in sent] == ["user", "assistant", "user"]
    assert [b["type"] for b in sent[1]["content"]] == ["text", "tool_use", "tool_use"]
    assert [b["type"] for b in sent[2]["content"]] == ["tool_result", "tool_result", "text"]
    assert model.requests[1]["system"] == "sys"


@pytest.mark.parametrize("protocol", ["openai", "anthropic"])
def test_retries_stop_at_the_attempt_limit_and_a_client_error_is_not_retried(
    protocol: str,
) -> None:
    with ScriptedModel(protocol, "m", [], faults=[503, 503, 503]) as model:
        provider = make_provider(_config(model, attempts=3))
        with pytest.raises(Exception, match="503"):
            provider.complete("sys", [msg.user("go")], TOOLS[protocol])
    assert len(model.requests) == 3
    bad = ScriptedModel(protocol, "m", [400, ScriptedTurn("never")])
    with bad as model, pytest.raises(Exception, match="400"):
        make_provider(_config(model)).complete("sys", [msg.user("go")], TOOLS[protocol])
    assert len(model.requests) == 1
