"""The trusted lm-eval stage (`python -m lossgym.trainer.lm_eval`) on fixture eval sets
in the real dataset schemas, against references written out here."""

from __future__ import annotations

import json
import math
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file
from trainertest_helpers import REPO, TINY_MODEL, subprocess_env

from lossgym.env.task import StageSpec
from lossgym.trainer import lm_eval
from lossgym.trainer.model import GPT, GPTConfig
from lossgym.trainer.tokenizer import EOT_ID, get_encoding

FIXTURES = Path(__file__).parent / "fixtures" / "evals"
CFG = {**TINY_MODEL, "n_layer": 2, "block_size": 64}
LABEL = "tiny"


@pytest.fixture(scope="module")
def model() -> GPT:
    torch.manual_seed(0)
    m = GPT(GPTConfig(**CFG))
    with torch.no_grad():  # bigger weights than the init, so choices differ clearly
        for p in m.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    return m.eval()


@pytest.fixture
def setup(tmp_path, model, trainer_data_root):
    state = {k: v.clone().contiguous() for k, v in model.state_dict().items()}
    del state["lm_head.weight"]
    save_file(state, tmp_path / "model.safetensors")
    (tmp_path / "model.json").write_text(json.dumps(CFG))
    return tmp_path, trainer_data_root


@pytest.fixture(scope="module")
def enc(trainer_data_root):
    return get_encoding(trainer_data_root)


def _argv(tmp_path: Path, data_root: Path, evals: Path = FIXTURES, **over: str) -> list[str]:
    args = {
        "--checkpoint": str(tmp_path / "model.safetensors"),
        "--model-config": str(tmp_path / "model.json"),
        "--evals-dir": str(evals),
        "--tokenizer-dir": str(data_root),
        "--label": LABEL,
        "--out": str(tmp_path / "eval" / "metrics.json"),
        "--device": "cpu",
    }
    args.update(over)
    return [x for kv in args.items() for x in kv]


def _docs(name: str) -> list[dict]:
    return [json.loads(x) for x in (FIXTURES / f"{name}.jsonl").read_text().splitlines() if x]


# ── the reference: one sequence at a time, explicit log-softmax and gather ─────


def ref_loglik(model, enc, context: str, continuation: str) -> tuple[float, bool]:
    """log P(continuation | context), and whether greedy decoding reproduces it."""
    ctx_ids = enc.encode_ordinary(context)
    cont_ids = enc.encode_ordinary(context + continuation)[len(ctx_ids) :]
    seq = torch.tensor(ctx_ids + cont_ids)
    assert len(seq) <= CFG["block_size"] + 1  # the fixtures need no truncation
    with torch.no_grad():
        logp = torch.log_softmax(model(seq[:-1][None])[0].double(), dim=-1)
    rows = range(len(ctx_ids) - 1, len(seq) - 1)
    picked = [logp[r, seq[r + 1]].item() for r in rows]
    greedy = all(int(logp[r].argmax()) == int(seq[r + 1]) for r in rows)
    return sum(picked), greedy


def ref_choices(model, enc, pairs, gold, lens) -> tuple[int, int]:
    ll = [ref_loglik(model, enc, c, t)[0] for c, t in pairs]
    best = max(range(len(ll)), key=lambda i: ll[i])
    best_norm = max(range(len(ll)), key=lambda i: ll[i] / lens[i])
    return int(best == gold), int(best_norm == gold)


def ref_arc(model, enc) -> tuple[float, float]:
    hits = []
    for d in _docs("arc_easy"):
        texts = d["choices"]["text"]
        ctx = "Question: " + d["question"] + "\nAnswer:"
        gold = d["choices"]["label"].index(d["answerKey"])
        pairs = [(ctx, " " + t) for t in texts]
        hits.append(ref_choices(model, enc, pairs, gold, [len(t) for t in texts]))
    return tuple(100.0 * sum(h[i] for h in hits) / len(hits) for i in (0, 1))


def ref_hellaswag(model, enc) -> tuple[float, float]:
    def clean(t: str) -> str:
        t = t.strip().replace(" [title]", ". ")
        return re.sub(r"\[.*?\]", "", t).replace("  ", " ")

    hits = []
    for d in _docs("hellaswag"):
        query = clean(d["activity_label"] + ": " + d["ctx_a"] + " " + d["ctx_b"].capitalize())
        ends = [clean(e) for e in d["endings"]]
        pairs = [(query, " " + e) for e in ends]
        hits.append(ref_choices(model, enc, pairs, int(d["label"]), [len(e) for e in ends]))
    return tuple(100.0 * sum(h[i] for h in hits) / len(hits) for i in (0, 1))


def ref_piqa(model, enc) -> tuple[float, float]:
    hits = []
    for d in _docs("piqa"):
        sols = [d["sol1"], d["sol2"]]
        pairs = [("Question: " + d["goal"] + "\nAnswer:", " " + s) for s in sols]
        hits.append(ref_choices(model, enc, pairs, d["label"], [len(s) for s in sols]))
    return tuple(100.0 * sum(h[i] for h in hits) / len(hits) for i in (0, 1))


def ref_winogrande(model, enc) -> float:
    hits = 0
    for d in _docs("winogrande"):
        prefix, _, rest = d["sentence"].partition("_")
        suffix = " " + rest.strip()
        ll = [ref_loglik(model, enc, prefix + d[o], suffix)[0] for o in ("option1", "option2")]
        hits += (0 if ll[0] >= ll[1] else 1) == int(d["answer"]) - 1
    return 100.0 * hits / len(_docs("winogrande"))


def ref_lambada(model, enc) -> tuple[float, float]:
    lls, hits = [], 0
    for d in _docs("lambada"):
        context, word = d["text"].rsplit(" ", 1)
        ll, greedy = ref_loglik(model, enc, context, " " + word)
        lls.append(ll)
        hits += greedy
    return math.exp(-sum(lls) / len(lls)), 100.0 * hits / len(lls)


def ref_wikitext(model, enc, block: int) -> float:
    """Disjoint windows: predictions [a, b) get inputs seq[max(0, b - block):b],
    seq = [EOT] + tokens, so every token is predicted exactly once."""
    nll, words = 0.0, 0
    for d in _docs("wikitext2"):
        words += len(re.split(r"\s+", d["page"]))
        seq = [EOT_ID, *enc.encode_ordinary(lm_eval.wikitext_detokenize(d["page"]))]
        n = len(seq) - 1
        for a in range(0, n, block):
            b = min(a + block, n)
            x = torch.tensor(seq[max(0, b - block) : b])
            with torch.no_grad():
                logp = torch.log_softmax(model(x[None])[0].double(), dim=-1)
            for j in range(a, b):  # predicts seq[j + 1] from position j - start
                nll -= logp[j - max(0, b - block), seq[j + 1]].item()
    return math.exp(nll / words)


# ── tests ──────────────────────────────────────────────────────────────────


def test_all_metrics_match_the_reference(setup, model, enc):
    tmp_path, data_root = setup
    proc = subprocess.run(
        [sys.executable, "-m", "lossgym.trainer.lm_eval", *_argv(tmp_path, data_root)],
        cwd=REPO, env=subprocess_env(), capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    out = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert set(out) == {"metrics", "counts", "skipped", "seconds", "checkpoint_sha256"}
    assert out["skipped"] == []
    assert out["counts"] == {
        "wikitext2": 2, "lambada": 3, "arc_easy": 4, "hellaswag": 3, "piqa": 3, "winogrande": 3,
    }  # fmt: skip
    m = {k.removesuffix(f"_{LABEL}"): v for k, v in out["metrics"].items()}
    assert set(m) == {
        "wikitext2_ppl", "lambada_ppl", "lambada_acc", "arc_easy_acc", "arc_easy_acc_norm",
        "hellaswag_acc", "hellaswag_acc_norm", "piqa_acc", "piqa_acc_norm", "winogrande_acc",
    }  # fmt: skip
    assert m["wikitext2_ppl"] == pytest.approx(ref_wikitext(model, enc, CFG["block_size"]), 1e-4)
    ppl, acc = ref_lambada(model, enc)
    assert (m["lambada_ppl"], m["lambada_acc"]) == (pytest.approx(ppl, 1e-4), acc)
    assert (m["arc_easy_acc"], m["arc_easy_acc_norm"]) == ref_arc(model, enc)
    assert (m["hellaswag_acc"], m["hellaswag_acc_norm"]) == ref_hellaswag(model, enc)
    assert (m["piqa_acc"], m["piqa_acc_norm"]) == ref_piqa(model, enc)
    assert m["winogrande_acc"] == ref_winogrande(model, enc)
    assert m["wikitext2_ppl"] > 1000  # an untrained model: the windows really were scored


def test_acc_norm_differs_from_acc_when_lengths_differ(setup, model, enc):
    """The gold answer is much longer than the distractors (one token each): summed
    log-likelihood favours a short choice, per-character normalisation the long one."""
    tmp_path, data_root = setup
    evals = tmp_path / "evals"
    evals.mkdir()
    long = "international environmental understanding"  # 3 tokens, 41 characters
    doc = {
        "id": "long_gold", "question": "What do plants use to make food?",
        "choices": {"text": ["no", long, "ok"], "label": ["A", "B", "C"]}, "answerKey": "B",
    }  # fmt: skip
    (evals / "arc_easy.jsonl").write_text(json.dumps(doc) + "\n")
    ctx = "Question: What do plants use to make food?\nAnswer:"
    texts = doc["choices"]["text"]
    ll = [ref_loglik(model, enc, ctx, " " + t)[0] for t in texts]
    assert max(range(3), key=lambda i: ll[i]) != 1  # acc: wrong
    assert max(range(3), key=lambda i: ll[i] / len(texts[i])) == 1  # acc_norm: right
    assert lm_eval.main(_argv(tmp_path, data_root, evals)) == 0
    out = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert out["metrics"] == {f"arc_easy_acc_{LABEL}": 0.0, f"arc_easy_acc_norm_{LABEL}": 100.0}
    assert out["counts"] == {"arc_easy": 1}
    assert out["skipped"] == ["wikitext2", "lambada", "hellaswag", "piqa", "winogrande"]


def test_sets_and_limit(setup):
    tmp_path, data_root = setup
    argv = _argv(tmp_path, data_root, **{"--sets": "piqa,lambada", "--limit": "2"})
    assert lm_eval.main(argv) == 0
    out = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert out["counts"] == {"lambada": 2, "piqa": 2}
    assert out["skipped"] == []
    assert sorted(out["metrics"]) == [
        f"lambada_acc_{LABEL}", f"lambada_ppl_{LABEL}",
        f"piqa_acc_norm_{LABEL}", f"piqa_acc_{LABEL}",
    ]  # fmt: skip


def test_bad_checkpoint_is_exit_1(setup, capsys):
    tmp_path, data_root = setup
    bad = tmp_path / "bad.safetensors"
    torch.save({"x": torch.zeros(1)}, bad)  # a pickle, never loaded
    proc = subprocess.run(
        [sys.executable, "-m", "lossgym.trainer.lm_eval",
         *_argv(tmp_path, data_root, **{"--checkpoint": str(bad)})],
        cwd=REPO, env=subprocess_env(), capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines()[-1].startswith("lm_eval: checkpoint ")
    assert not (tmp_path / "eval" / "metrics.json").exists()


def test_setup_errors_are_exit_2(setup, capsys):
    tmp_path, data_root = setup
    assert lm_eval.main(_argv(tmp_path, data_root, tmp_path / "nowhere")) == 2
    assert "lossgym data prepare evals" in capsys.readouterr().err
    empty = tmp_path / "empty"
    empty.mkdir()
    assert lm_eval.main(_argv(tmp_path, data_root, empty)) == 2
    assert "none of wikitext2" in capsys.readouterr().err
    shutil.copy(FIXTURES / "piqa.jsonl", empty / "piqa.jsonl")
    (empty / "piqa.jsonl").write_text('{"goal": "x"}\n')
    assert lm_eval.main(_argv(tmp_path, data_root, empty)) == 2
    assert "does not fit the piqa schema" in capsys.readouterr().err
    assert lm_eval.main(_argv(tmp_path, data_root, **{"--sets": "mmlu"})) == 2
    assert "unknown eval set(s) ['mmlu']" in capsys.readouterr().err


def test_rolling_windows_predict_every_token_once():
    tokens = list(range(1, 12))
    for block, stride in [(4, 4), (4, 2), (4, 1), (16, 16)]:
        wins = list(lm_eval.rolling_windows(tokens, block, stride))
        assert [t for w in wins for t in w.targets] == tokens
        for w in wins:
            assert len(w.inputs) <= block
            seq = [EOT_ID, *tokens]  # the input just before each target is its predecessor
            last = seq.index(w.targets[-1])
            assert w.inputs[-1] == seq[last - 1]


def test_pair_request_tokenization_and_truncation(enc):
    r = lm_eval.pair_request("The cat sat on the ", "mat", enc.encode_ordinary, 64)
    assert enc.decode(r.targets) == " mat"  # the trailing space moved to the continuation
    assert enc.decode(r.inputs) == "The cat sat on the"
    r = lm_eval.pair_request("one two three four five six", " seven", enc.encode_ordinary, 3)
    assert len(r.inputs) == 3 and enc.decode(r.targets) == " seven"
    assert enc.decode(r.inputs) == " four five six"
    r = lm_eval.pair_request("", "Hello", enc.encode_ordinary, 8)
    assert r.inputs == [EOT_ID] and enc.decode(r.targets) == "Hello"


def test_wikitext_detokenizer_and_hellaswag_cleaning():
    text = " The valley is 12 @.@ 5 km long , 2 @,@ 000 m wide ( about ) and well @-@ known . \n"
    assert lm_eval.wikitext_detokenize(text) == (
        " The valley is 12.5 km long, 2,000 m wide (about) and well-known.\n"
    )
    assert lm_eval.hellaswag_clean(" [header] How to tie [title] Cross  them. ") == (
        " How to tie. Cross them."  # strip comes first, as in lm-eval
    )


def test_eval_set_names_agree_with_the_task_schema():
    limits = {"memory": "1GiB", "cpus": 1, "pids": 64}
    stage = StageSpec(
        label="e", kind="lm-eval", time_limit_s=1, limits=limits, evals=list(lm_eval.EVAL_SETS)
    )
    assert tuple(stage.evals) == lm_eval.EVAL_SETS


def test_worker_stage_maps_exit_codes(setup):
    """The lm-eval stage as the worker runs it: ok with metrics and counts; a rejected
    checkpoint is the agent's failure; missing eval data is the infrastructure's."""
    import threading

    from lossgym.sandbox.local_runner import LocalRunner
    from lossgym.sandbox.stages import LmEvalJob, run_lm_eval_stage

    tmp_path, data_root = setup
    data = tmp_path / "data"
    shutil.copytree(data_root / "tokenizer", data / "tokenizer")
    shutil.copytree(FIXTURES, data / "evals")

    def run(checkpoint: Path, evals: Path, name: str):
        job = LmEvalJob(
            run_dir=tmp_path / name, checkpoint=checkpoint, evals_dir=evals, label="lm-eval-tiny",
            model_config=CFG, time_limit_s=120, evals=["piqa", "winogrande"], limit=2,
        )  # fmt: skip
        return run_lm_eval_stage(job, LocalRunner(isolation="none"), threading.Event())

    ok = run(tmp_path / "model.safetensors", data / "evals", "a")
    assert ok.status == "ok", ok.reason
    assert sorted(ok.metrics) == [
        "piqa_acc_lm-eval-tiny", "piqa_acc_norm_lm-eval-tiny", "winogrande_acc_lm-eval-tiny",
    ]  # fmt: skip
    assert ok.info["eval"]["counts"] == {"piqa": 2, "winogrande": 2}
    bad = run(tmp_path / "missing.safetensors", data / "evals", "b")
    assert (bad.status, bad.infra, bad.exit_code) == ("failed", False, 1)
    assert "checkpoint not found" in bad.reason
    infra = run(tmp_path / "model.safetensors", data / "nowhere", "c")
    assert (infra.status, infra.infra, infra.exit_code) == ("error", True, 2)


def test_prepare_evals_pages_and_offline_error(tmp_path, monkeypatch):
    import io
    import urllib.error
    import urllib.parse

    from lossgym.trainer import evals_data

    rows = [{"goal": f"g{i}", "sol1": "a", "sol2": "b", "label": i % 2} for i in range(230)]
    asked = []

    def fake_urlopen(url, timeout):
        q = urllib.parse.parse_qs(urllib.parse.urlparse(url).query)
        asked.append((q["dataset"][0], q["split"][0], int(q["offset"][0])))
        off = int(q["offset"][0])
        page = [{"row_idx": off + i, "row": r} for i, r in enumerate(rows[off : off + 100])]
        return io.BytesIO(json.dumps({"rows": page, "num_rows_total": len(rows)}).encode())

    monkeypatch.setattr(evals_data.urllib.request, "urlopen", fake_urlopen)
    out = evals_data.prepare_evals(tmp_path, lambda _m: None, names=("piqa",))
    got = [json.loads(x) for x in (out / "piqa.jsonl").read_text().splitlines()]
    assert got == rows
    assert asked == [("ybisk/piqa", "validation", o) for o in (0, 100, 200)]

    def offline(url, timeout):
        raise urllib.error.URLError("Name or service not known")

    monkeypatch.setattr(evals_data.urllib.request, "urlopen", offline)
    with pytest.raises(evals_data.EvalsDataError) as e:
        evals_data.prepare_evals(tmp_path, lambda _m: None, names=("piqa", "lambada"))
    msg = str(e.value)
    assert "\n" not in msg and "https://datasets-server.huggingface.co/rows?" in msg
    assert "lambada_openai" in msg and f"into {tmp_path / 'evals'} by hand" in msg
