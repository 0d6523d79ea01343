"""`lossgym agent`: point a model at LossGym and get recorded, comparable sessions."""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path
from typing import Annotated, Literal, NoReturn

import typer

from lossgym.cli.common import settings_from

Provider = Literal["openai", "anthropic"]


def agent(
    model: Annotated[
        str | None,
        typer.Option(help="The model name the endpoint serves (required unless --resume)."),
    ] = None,
    provider: Annotated[
        str | None,
        typer.Option(help="openai (chat completions: vLLM, SGLang, Ollama, …) or anthropic."),
    ] = None,
    base_url: Annotated[
        str | None,
        typer.Option(
            help="The model's endpoint, e.g. http://127.0.0.1:11434/v1 (default: the provider's)."
        ),
    ] = None,
    api_key_env: Annotated[
        str | None,
        typer.Option(
            help="Variable holding the API key (default: OPENAI_API_KEY or ANTHROPIC_API_KEY)."
        ),
    ] = None,
    server: Annotated[
        str | None,
        typer.Option(help="The LossGym service (default: http://LOSSGYM_HOST:LOSSGYM_PORT)."),
    ] = None,
    task: Annotated[str, typer.Option(help="Task to play.")] = "llm-pretrain-loss",
    profile: Annotated[str | None, typer.Option(help="Profile (default: the task's).")] = None,
    seed: Annotated[
        int | None,
        typer.Option(
            help="Seed of session 1; session i gets seed+i-1 (default: the task's seeds)."
        ),
    ] = None,
    sessions: Annotated[int, typer.Option(min=1, help="Independent sessions to run.")] = 1,
    parallel: Annotated[int, typer.Option(min=1, help="Sessions at a time.")] = 1,
    resume: Annotated[
        str | None, typer.Option(help="Go on with this session, from its transcript.")
    ] = None,
    agent_name: Annotated[
        str | None, typer.Option(help="Name on the leaderboard (default: the model's).")
    ] = None,
    transcripts: Annotated[
        Path | None,
        typer.Option(help="Where transcripts go (default: transcripts/ next to the database)."),
    ] = None,
    max_turns: Annotated[
        int | None, typer.Option(min=1, help="Model requests per session (default: steps + 5).")
    ] = None,
    max_tokens: Annotated[
        int | None, typer.Option(min=1, help="Output token limit per request.")
    ] = None,
    temperature: Annotated[float | None, typer.Option(help="Sampling temperature.")] = None,
    price_in: Annotated[
        float | None, typer.Option(help="USD per million input tokens, for cost when not reported.")
    ] = None,
    retry_backoff: Annotated[
        float,
        typer.Option(min=0, help="First wait (s) before retrying a rate limit or 5xx; doubles."),
    ] = 2.0,
    price_out: Annotated[
        float | None, typer.Option(help="USD per million output tokens, likewise.")
    ] = None,
) -> None:
    """Run an LLM agent on LossGym: N sessions, K at a time, through the public API.

    Every session lands on the leaderboard under the model's name, with its token usage;
    its transcript is a JSONL file named after the session. Exits 1 if a session failed.
    """
    import httpx

    from lossgym.agent.loop import LoopConfig
    from lossgym.agent.providers import DEFAULT_API_KEY_ENV, ModelConfig
    from lossgym.agent.runs import PlanError, RunPlan, describe, run_sessions
    from lossgym.agent.runs import resume as resume_session
    from lossgym.agent.transcript import TranscriptError
    from lossgym.client import Api, ApiError

    settings = settings_from()
    folder = transcripts or settings.database.parent / "transcripts"
    saved = _saved_header(folder, resume) if resume else {}
    model = model or saved.get("model")
    provider = provider or saved.get("provider") or "openai"
    if not model:
        _fail("--model is required (the model name the endpoint serves)")
    if provider not in ("openai", "anthropic"):
        _fail(f"--provider must be openai or anthropic, not {provider!r}")
    base_url = base_url or saved.get("base_url")
    key_env = api_key_env or DEFAULT_API_KEY_ENV[provider]
    api_key = os.environ.get(key_env)
    if not api_key:
        if api_key_env or not base_url:
            _fail(f"set {key_env} to the API key (or name another variable with --api-key-env)")
        api_key = "not-needed"  # local servers (vLLM, Ollama, llama.cpp) accept any key
    plan = RunPlan(
        model=ModelConfig(
            provider,
            model,
            api_key,
            base_url,
            max_tokens,
            temperature,
            price_in,
            price_out,
            backoff_s=retry_backoff,
        ),
        agent=agent_name or saved.get("agent") or model,
        task=task,
        profile=profile,
        seed=seed,
        sessions=sessions,
        parallel=parallel,
        transcripts=folder,
        loop=LoopConfig(max_turns=max_turns),
    )
    server = server or saved.get("server") or f"http://{settings.host}:{settings.port}"
    api = Api(server, backoff_s=retry_backoff)
    if not api.health():
        _fail(f"LossGym is not answering at {server}: start it (lossgym serve) or pass --server")
    lock = threading.Lock()

    def say(line: str) -> None:
        with lock:
            typer.echo(line)

    try:
        if resume:
            outcomes = [resume_session(api, plan, resume, say)]
        else:
            outcomes = run_sessions(api, plan, say)
    except (PlanError, TranscriptError, ApiError) as error:
        _fail(str(error))
    except httpx.TransportError as error:  # the service or the model is not reachable
        _fail(f"connection failed ({type(error).__name__}): {error}")
    rows = [describe(o) for o in outcomes]
    typer.echo(json.dumps(rows, indent=2))
    typer.echo(f"leaderboard: {server.rstrip('/')}/")
    if any("error" in row for row in rows):
        raise typer.Exit(1)


def _saved_header(folder: Path, session_id: str) -> dict[str, object]:
    from lossgym.agent.runs import resume_header
    from lossgym.agent.transcript import TranscriptError

    try:
        return resume_header(folder, session_id)
    except TranscriptError as error:
        _fail(str(error))


def _fail(text: str) -> NoReturn:
    typer.echo(f"error: {text}", err=True)
    raise typer.Exit(2)
