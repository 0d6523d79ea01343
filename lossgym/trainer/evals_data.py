"""``lossgym data prepare evals``: the downstream eval sets as ``<data_dir>/evals/<set>.jsonl``.

Each set is fetched, in its real Hugging Face schema, through the Hub's
dataset viewer rows API (plain HTTPS and JSON, no extra dependency), one
page of rows at a time, and written one example per line. The splits are
the ones lm-evaluation-harness scores. A host without access to the Hub can
place the same files there by hand (any export of those splits to JSON
Lines in the dataset's own schema will do); ``lossgym.trainer.lm_eval``
reads exactly these files and skips the absent ones.

No torch here: the data CLI uses this module.
"""

from __future__ import annotations

import json
import os
import tempfile
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from pathlib import Path

from lossgym.trainer.data import DatasetError

ROWS_API = "https://datasets-server.huggingface.co/rows"
PAGE = 100  # the most rows the API returns per request
TIMEOUT_S = 60

# set name → (Hub dataset, config, split), as lm-evaluation-harness scores them
SOURCES: dict[str, tuple[str, str, str]] = {
    "wikitext2": ("EleutherAI/wikitext_document_level", "wikitext-2-raw-v1", "test"),
    "lambada": ("EleutherAI/lambada_openai", "default", "test"),
    "arc_easy": ("allenai/ai2_arc", "ARC-Easy", "test"),
    "hellaswag": ("Rowan/hellaswag", "default", "validation"),
    "piqa": ("ybisk/piqa", "plain_text", "validation"),
    "winogrande": ("allenai/winogrande", "winogrande_xl", "validation"),
}


class EvalsDataError(DatasetError):
    """An eval set cannot be fetched (one-line message naming the URL)."""


def evals_dir(data_dir: str | os.PathLike) -> Path:
    return Path(data_dir) / "evals"


def rows_url(name: str, offset: int) -> str:
    dataset, config, split = SOURCES[name]
    query = {"dataset": dataset, "config": config, "split": split}
    query.update(offset=str(offset), length=str(PAGE))
    return f"{ROWS_API}?{urllib.parse.urlencode(query)}"


def _get_json(url: str, target: Path) -> dict:
    try:
        with urllib.request.urlopen(url, timeout=TIMEOUT_S) as resp:
            return json.load(resp)
    except (urllib.error.URLError, OSError, ValueError) as e:
        why = getattr(e, "reason", None) or e
        raise EvalsDataError(
            f"cannot fetch {url} ({why}); without access to the Hugging Face Hub, put "
            f"{target.name} (one JSON example per line, in the dataset's own schema) "
            f"into {target.parent} by hand"
        ) from None


def fetch_rows(name: str, target: Path) -> list[dict]:
    """Every row of the set's split, in order."""
    rows: list[dict] = []
    total = None
    while total is None or len(rows) < total:
        page = _get_json(rows_url(name, len(rows)), target)
        total = int(page.get("num_rows_total", 0))
        got = [r["row"] for r in page.get("rows", [])]
        if not got and len(rows) < total:
            raise EvalsDataError(f"{rows_url(name, len(rows))} returned no rows")
        rows.extend(got)
    return rows


def write_jsonl(rows: list[dict], target: Path) -> None:
    """Atomically write ``rows`` as JSON Lines (a reader never sees half a file)."""
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.")
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
    os.chmod(tmp, 0o644)
    os.replace(tmp, target)


def prepare_evals(
    data_dir: str | os.PathLike,
    progress: Callable[[str], object] = print,
    names: tuple[str, ...] = tuple(SOURCES),
) -> Path:
    """Fetch every set not yet present; idempotent (a present file is kept)."""
    target_dir = evals_dir(data_dir)
    target_dir.mkdir(parents=True, exist_ok=True)
    for name in names:
        target = target_dir / f"{name}.jsonl"
        if target.is_file():
            progress(f"evals: {name}: already present at {target}")
            continue
        dataset, config, split = SOURCES[name]
        progress(f"evals: {name}: fetching {dataset} ({config}, {split}) from the Hub")
        rows = fetch_rows(name, target)
        write_jsonl(rows, target)
        progress(f"evals: {name}: wrote {len(rows)} examples to {target}")
    return target_dir
