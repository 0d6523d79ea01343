"""Trusted downstream evaluation of a training checkpoint (the ``lm-eval`` stage).

    python -m lossgym.trainer.lm_eval --checkpoint out/model.safetensors \\
        --model-config model.json --evals-dir <data_dir>/evals \\
        --label <label> --out eval/metrics.json [--sets a,b] [--limit N]

Loads the pristine ``GPT`` with ``load_checkpoint`` (exact key and shape
checks, never unpickles) and scores every eval set whose ``<set>.jsonl`` is
present in ``--evals-dir`` (absent ones are listed under ``skipped``). The
scoring follows lm-evaluation-harness (re-implemented here, not imported):

- ``wikitext2``: document-level rolling log-likelihood. Each document (after
  the WikiText detokenizer) is tokenized, ``<|endoftext|>`` is the first
  input, and windows of ``block_size`` tokens predict ``--stride`` new tokens
  each (default ``block_size``: disjoint windows, lm-eval's ``context_len=1``).
  ``wikitext2_ppl = exp(total NLL / total words)``, words counted in the raw
  document as ``len(re.split(r"\\s+", page))``, as lm-eval does.
- ``lambada`` (OpenAI version): context = text up to the last space,
  continuation = `` " " + last word``. ``lambada_ppl = exp(-mean over documents
  of the summed log-likelihood of the last word's tokens)``; ``lambada_acc`` =
  % of documents where greedy argmax reproduces every token of it.
- ``arc_easy``, ``hellaswag``, ``piqa``: the log-likelihood of ``" " + choice``
  given the context; ``acc`` = % argmax of the summed log-likelihood,
  ``acc_norm`` = % argmax of log-likelihood / ``len(choice)`` in characters.
- ``winogrande``: partial evaluation. The blank ``_`` splits the sentence;
  each option substituted into the prefix forms a context, and the common
  suffix (``" " + rest.strip()``) is scored given each; ``acc`` only.

Context and continuation are tokenized as lm-eval does: trailing spaces of the
context move to the continuation, the pair is encoded whole, and the
continuation is the tokens after the context's own encoding. Sequences longer
than ``block_size + 1`` lose tokens on the left. Ties go to the first choice.

Writes ``{"metrics": {"<set>_<metric>_<label>": float}, "counts": {set: n},
"skipped": [set, ...], "seconds": s}``. Exit status as ``evaluate``: 1 the
checkpoint is missing or rejected, 2 arguments / config / data, 3 internal.
"""

from __future__ import annotations

import argparse
import json
import math
import re
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import torch

from lossgym.trainer.evaluate import EvalError, _pick_device, _read_model_config, run_trusted
from lossgym.trainer.model import GPT, load_checkpoint
from lossgym.trainer.tokenizer import EOT_ID, TokenizerError, get_encoding

EVAL_SETS = ("wikitext2", "lambada", "arc_easy", "hellaswag", "piqa", "winogrande")

Encoder = Callable[[str], list[int]]


# ── scoring requests ─────────────────────────────────────────────────────────


@dataclass(frozen=True)
class Request:
    """Score ``targets``, predicted by the last ``len(targets)`` positions of ``inputs``."""

    inputs: list[int]
    targets: list[int]


@dataclass(frozen=True)
class Score:
    loglik: float  # summed log-probability of the targets
    greedy: bool  # argmax reproduces every target token


def pair_request(context: str, continuation: str, encode: Encoder, block: int) -> Request:
    """lm-eval's context/continuation split, left-truncated to ``block`` inputs."""
    n_space = len(context) - len(context.rstrip(" "))
    if n_space:
        context, continuation = context[:-n_space], context[-n_space:] + continuation
    whole = encode(context + continuation)
    ctx = encode(context)
    cont = whole[len(ctx) :] if ctx else whole
    full = (whole if ctx else [EOT_ID, *whole])[-(block + 1) :]
    return Request(full[:-1], cont[-block:])


def _forward_batch(model: GPT, reqs: list[Request], device: str) -> list[Score]:
    width = max(len(r.inputs) for r in reqs)
    x = torch.zeros(len(reqs), width, dtype=torch.long)
    for i, r in enumerate(reqs):  # right padding: causal attention never sees it
        x[i, : len(r.inputs)] = torch.tensor(r.inputs)
    with torch.autocast("cuda", dtype=torch.bfloat16, enabled=device.startswith("cuda")):
        logits = model(x.to(device))
    out = []
    for i, r in enumerate(reqs):
        end, k = len(r.inputs), len(r.targets)
        logp = torch.log_softmax(logits[i, end - k : end].float(), dim=-1)
        y = torch.tensor(r.targets, device=logp.device)
        ll = logp.gather(1, y[:, None]).sum().item()
        out.append(Score(ll, bool((logp.argmax(-1) == y).all())))
    return out


@torch.no_grad()
def score_requests(
    model: GPT, reqs: list[Request], device: str = "cpu", batch_tokens: int = 2048
) -> list[Score]:
    """Score every request, batched by length (longest first); results in input order."""
    model.eval()
    order = sorted(range(len(reqs)), key=lambda i: (-len(reqs[i].inputs), i))
    scores: list[Score | None] = [None] * len(reqs)
    start = 0
    while start < len(order):
        width = len(reqs[order[start]].inputs)
        rows = max(1, batch_tokens // max(width, 1))
        chunk = order[start : start + rows]
        for i, s in zip(
            chunk, _forward_batch(model, [reqs[i] for i in chunk], device), strict=True
        ):
            scores[i] = s
        start += len(chunk)
    return scores  # type: ignore[return-value]


# ── the eval sets ────────────────────────────────────────────────────────────


@dataclass(frozen=True)
class Choice:
    """One multiple-choice question: (context, continuation) pairs and the gold index."""

    pairs: list[tuple[str, str]]
    gold: int
    norm_lens: list[int]  # characters of each choice, for acc_norm


def arc_easy_doc(doc: dict) -> Choice:
    texts = list(doc["choices"]["text"])
    gold = list(doc["choices"]["label"]).index(doc["answerKey"])
    ctx = f"Question: {doc['question']}\nAnswer:"
    return Choice([(ctx, " " + t) for t in texts], gold, [len(t) for t in texts])


def hellaswag_clean(text: str) -> str:
    """lm-eval's HellaSwag preprocessing: strip, ' [title]' → '. ', drop [tags], '  ' → ' '."""
    text = text.strip().replace(" [title]", ". ")
    return re.sub(r"\[.*?\]", "", text).replace("  ", " ")


def hellaswag_doc(doc: dict) -> Choice:
    if "ctx_a" in doc and "ctx_b" in doc:
        ctx = doc["ctx_a"] + " " + doc["ctx_b"].capitalize()
    else:
        ctx = doc["ctx"]
    query = hellaswag_clean(doc["activity_label"] + ": " + ctx)
    endings = [hellaswag_clean(e) for e in doc["endings"]]
    return Choice([(query, " " + e) for e in endings], int(doc["label"]), [len(e) for e in endings])


def piqa_doc(doc: dict) -> Choice:
    sols = [doc["sol1"], doc["sol2"]]
    ctx = f"Question: {doc['goal']}\nAnswer:"
    return Choice([(ctx, " " + s) for s in sols], int(doc["label"]), [len(s) for s in sols])


def winogrande_doc(doc: dict) -> Choice:
    """Partial evaluation: option in the prefix as context, the shared suffix scored."""
    sentence = doc["sentence"]
    blank = sentence.index("_")
    suffix = " " + sentence[blank + 1 :].strip()
    contexts = [sentence[:blank] + doc["option1"], sentence[:blank] + doc["option2"]]
    gold = {"1": 0, "2": 1}[str(doc["answer"])]
    return Choice([(c, suffix) for c in contexts], gold, [len(c) for c in contexts])


CHOICE_SETS: dict[str, tuple[Callable[[dict], Choice], bool]] = {
    # set name → (document reader, whether acc_norm is reported)
    "arc_easy": (arc_easy_doc, True),
    "hellaswag": (hellaswag_doc, True),
    "piqa": (piqa_doc, True),
    "winogrande": (winogrande_doc, False),
}


def argmax(values: list[float]) -> int:
    return max(range(len(values)), key=lambda i: (values[i], -i))


def eval_choices(docs: list[dict], read: Callable[[dict], Choice], ctx: EvalContext) -> dict:
    items = [read(d) for d in docs]
    reqs = [pair_request(c, t, ctx.encode, ctx.block) for it in items for c, t in it.pairs]
    scores = iter(ctx.score(reqs))
    acc = acc_norm = 0
    for it in items:
        ll = [next(scores).loglik for _ in it.pairs]
        acc += argmax(ll) == it.gold
        acc_norm += (
            argmax([v / max(n, 1) for v, n in zip(ll, it.norm_lens, strict=True)]) == it.gold
        )
    return {"acc": 100.0 * acc / len(items), "acc_norm": 100.0 * acc_norm / len(items)}


def eval_lambada(docs: list[dict], ctx: EvalContext) -> dict:
    pairs = []
    for d in docs:
        context, word = d["text"].rsplit(" ", 1)
        pairs.append(pair_request(context, " " + word, ctx.encode, ctx.block))
    scores = ctx.score(pairs)
    mean_ll = sum(s.loglik for s in scores) / len(scores)
    return {"ppl": _exp(-mean_ll), "acc": 100.0 * sum(s.greedy for s in scores) / len(scores)}


_WIKI_RULES = [
    (" @-@ ", "-"), (" @,@ ", ","), (" @.@ ", "."), (" : ", ": "), (" ; ", "; "),
    (" . ", ". "), (" ! ", "! "), (" ? ", "? "), (" , ", ", "), ("= = = =", "===="),
    ("= = =", "==="), ("= =", "=="), (" \n", "\n"), ("\n ", "\n"), (" N ", " 1 "),
    (" 's", "'s"),
]  # fmt: skip


def wikitext_detokenize(text: str) -> str:
    """Undo WikiText's tokenization (spaced punctuation, @-@ joins, spaced brackets)."""
    text = text.replace("s '", "s'")
    text = re.sub(r"/' [0-9]/", r"/'[0-9]/", text)
    for old, new in _WIKI_RULES:
        text = text.replace(old, new)
    text = re.sub(r"\(\s*([^\)]*?)\s*\)", r"(\1)", text)
    text = re.sub(r"\[\s*([^\]]*?)\s*\]", r"[\1]", text)
    text = re.sub(r"{\s*([^}]*?)\s*}", r"{\1}", text)
    text = re.sub(r"\"\s*([^\"]*?)\s*\"", r'"\1"', text)
    return re.sub(r"'\s*([^']*?)\s*'", r"'\1'", text)


def rolling_windows(tokens: list[int], block: int, stride: int) -> Iterator[Request]:
    """Windows of at most ``block`` inputs predicting each token once, ``stride`` at a time."""
    if not tokens:
        return
    first = min(block, len(tokens))
    yield Request([EOT_ID, *tokens[: first - 1]], tokens[:first])
    done = first
    while done < len(tokens):
        n = min(len(tokens) - done, stride)
        end = done + n
        yield Request(tokens[end - block - 1 : end - 1], tokens[end - n : end])
        done = end


def eval_wikitext(docs: list[dict], ctx: EvalContext) -> dict:
    reqs, words = [], 0
    for d in docs:
        page = d.get("page", d.get("text", ""))
        words += len(re.split(r"\s+", page))
        reqs.extend(rolling_windows(ctx.encode(wikitext_detokenize(page)), ctx.block, ctx.stride))
    nll = -sum(s.loglik for s in ctx.score(reqs))
    return {"ppl": _exp(nll / max(words, 1))}


def _exp(x: float) -> float:
    try:
        return math.exp(x)
    except OverflowError:
        return math.inf


# ── running ──────────────────────────────────────────────────────────────────


@dataclass
class EvalContext:
    model: GPT
    encode: Encoder
    device: str
    batch_tokens: int
    stride: int

    @property
    def block(self) -> int:
        return self.model.config.block_size

    def score(self, reqs: list[Request]) -> list[Score]:
        return score_requests(self.model, reqs, self.device, self.batch_tokens)


def eval_set(name: str, docs: list[dict], ctx: EvalContext) -> dict[str, float]:
    if name == "wikitext2":
        return eval_wikitext(docs, ctx)
    if name == "lambada":
        return eval_lambada(docs, ctx)
    read, with_norm = CHOICE_SETS[name]
    result = eval_choices(docs, read, ctx)
    return result if with_norm else {"acc": result["acc"]}


def read_docs(path: Path, limit: int | None) -> list[dict]:
    docs = []
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                doc = json.loads(line)
            except ValueError as e:
                raise EvalError(f"{path}:{n}: not JSON: {e}") from e
            if not isinstance(doc, dict):
                raise EvalError(f"{path}:{n}: expected a JSON object")
            docs.append(doc)
            if limit is not None and len(docs) >= limit:
                break
    if not docs:
        raise EvalError(f"{path} holds no examples")
    return docs


def _score_set(name: str, path: Path, ctx: EvalContext, limit: int | None) -> tuple[dict, int]:
    docs = read_docs(path, limit)
    try:
        return eval_set(name, docs, ctx), len(docs)
    except (KeyError, ValueError, TypeError, IndexError) as e:
        raise EvalError(f"{path}: an example does not fit the {name} schema: {e!r}") from e


def _wanted_sets(spec: str | None) -> list[str]:
    if not spec:
        return list(EVAL_SETS)
    names = [s.strip() for s in spec.split(",") if s.strip()]
    unknown = [s for s in names if s not in EVAL_SETS]
    if unknown:
        raise EvalError(f"unknown eval set(s) {unknown}; known: {', '.join(EVAL_SETS)}")
    return names


def _setup(args: argparse.Namespace) -> tuple[EvalContext, Path]:
    if args.limit is not None and args.limit < 1:
        raise EvalError(f"--limit must be positive, got {args.limit}")
    evals_dir = Path(args.evals_dir)
    if not evals_dir.is_dir():
        raise EvalError(f"no eval data at {evals_dir}; run `lossgym data prepare evals`")
    device = _pick_device(args.device)
    config = _read_model_config(args.model_config)
    if args.stride is not None and not 1 <= args.stride <= config.block_size:
        raise EvalError(f"--stride must be in 1..{config.block_size}, got {args.stride}")
    enc = get_encoding(args.tokenizer_dir or evals_dir.parent)
    model = load_checkpoint(args.checkpoint, config).to(device)
    stride = args.stride or config.block_size
    return EvalContext(model, enc.encode_ordinary, device, args.batch_tokens, stride), evals_dir


def lm_evaluate(args: argparse.Namespace) -> dict:
    t0 = time.time()
    wanted = _wanted_sets(args.sets)
    ctx, evals_dir = _setup(args)
    present = [s for s in wanted if (evals_dir / f"{s}.jsonl").is_file()]
    if not present:
        raise EvalError(f"none of {', '.join(wanted)} found as <set>.jsonl in {evals_dir}")
    metrics, counts = {}, {}
    for name in present:
        result, counts[name] = _score_set(name, evals_dir / f"{name}.jsonl", ctx, args.limit)
        metrics.update({f"{name}_{k}_{args.label}": v for k, v in result.items()})
    return {
        "metrics": metrics,
        "counts": counts,
        "skipped": [s for s in wanted if s not in present],
        "seconds": round(time.time() - t0, 3),
    }


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m lossgym.trainer.lm_eval",
        description="Trusted downstream evaluation (perplexity, multiple choice) of a checkpoint.",
    )
    p.add_argument("--checkpoint", required=True, help="model.safetensors written by training")
    p.add_argument("--model-config", required=True, help="model.json with GPTConfig fields")
    p.add_argument("--evals-dir", required=True, help="directory of <set>.jsonl files")
    p.add_argument("--label", required=True, help="metric key suffix: <set>_<metric>_<label>")
    p.add_argument("--out", required=True, help="where to write the metrics JSON")
    p.add_argument("--sets", default=None, help=f"comma-separated subset of {','.join(EVAL_SETS)}")
    p.add_argument("--limit", type=int, default=None, help="first N examples of each set")
    p.add_argument("--device", default="auto", help="auto (cuda if available), cpu or cuda")
    p.add_argument("--tokenizer-dir", default=None, help="data dir holding tokenizer/ [parent]")
    p.add_argument("--batch-tokens", type=int, default=2048, help="padded tokens per forward")
    p.add_argument("--stride", type=int, default=None, help="WikiText new tokens per window")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    setup_errors = (EvalError, TokenizerError, OSError)
    return run_trusted(
        "lm_eval", lambda: lm_evaluate(args), args.out, args.checkpoint, setup_errors
    )


if __name__ == "__main__":
    sys.exit(main())
