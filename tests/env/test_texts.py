"""The texts agents read about tests and submissions (SPEC §4, seed transcript)."""

from __future__ import annotations

from lossgym.env import texts
from lossgym.env.texts import StageView

HIDDEN = ["piqa_*", "winogrande_*"]


def _stages() -> list[StageView]:
    return [
        StageView(
            label="gpt-345m", kind="train", status="ok", elapsed_s=20878.2,
            metrics={"val_loss_gpt-345m": 2.33831, "wikitext2_ppl_gpt-345m": 47.91},
            train_lines=[f"TRAIN_METRICS: step={s}, train_loss=2.6, val_loss=2.4" for s in range(7)],
        ),
        StageView(
            label="lm-eval-345m", kind="lm-eval", status="ok", elapsed_s=300,
            metrics={"arc_easy_lm-eval-345m": 53.2, "piqa_lm-eval-345m": 63.82},
        ),
    ]  # fmt: skip


def test_headers_follow_the_seed() -> None:
    assert texts.test_header(1, 2) == (
        "[Test #1] (2 tests remaining; call submit(n=1) to submit this result)"
    )
    assert texts.test_header(2, 1) == (
        "[Test #2] (1 test remaining; call submit(n=N) to choose which test result to submit "
        "as final)"
    )
    assert texts.test_header(3, 0).startswith("[Test #3] (0 tests remaining; ")


def test_report_shows_last_five_lines_and_hides_hidden_metrics() -> None:
    report = texts.test_report(1, 2, _stages(), HIDDEN)
    blocks = report.split("\n\n")
    assert blocks[1].splitlines()[:2] == ["### gpt-345m (train)", "Training metrics (last steps):"]
    assert (
        blocks[1].count("TRAIN_METRICS") == 5
        and "step=6" in blocks[1]
        and "step=1," not in blocks[1]
    )
    assert blocks[1].splitlines()[-1] == (
        "Final metrics (gpt-345m): val_loss_gpt-345m=2.3383, wikitext2_ppl_gpt-345m=47.9100"
    )
    assert blocks[2] == (
        "### lm-eval-345m (lm-eval)\nFinal metrics (lm-eval-345m): arc_easy_lm-eval-345m=53.2000"
    )
    assert blocks[3] == (
        "[Leaderboard] Results saved: {'val_loss_gpt-345m': 2.3383, 'wikitext2_ppl_gpt-345m': "
        "47.91, 'elapsed_gpt-345m': 20878, 'arc_easy_lm-eval-345m': 53.2, "
        "'elapsed_lm-eval-345m': 300}"
    )
    assert "piqa" not in report
    assert "piqa_lm-eval-345m" in texts.saved_metrics(_stages())  # the leaderboard keeps it


def test_failed_and_timed_out_stages() -> None:
    failed = StageView(
        label="gpt-tiny", kind="train", status="failed", exit_code=1,
        log_tail="step 1\nFinal metrics (gpt-tiny): val_loss_gpt-tiny=0.0001\nTraceback: boom\n",
    )  # fmt: skip
    text = texts.stage_block(failed, HIDDEN)
    assert "[STATUS: FAILED exit=1]" in text
    assert "  | Traceback: boom" in text
    assert "\nFinal metrics" not in text  # a forged line stays marked as log output
    timeout = StageView(label="gpt-tiny", kind="train", status="timeout", time_limit_s=600)
    assert "[STATUS: TIMEOUT after 600 s]" in texts.stage_block(timeout, HIDDEN)
    assert "does not count" in texts.stage_block(timeout, HIDDEN)


def test_submit_report() -> None:
    text = texts.submit_report(1, _stages(), HIDDEN)
    assert text.startswith("[submit] Submitting result from test #1 as final.\n\n### gpt-345m")
    assert "\n\n[submit] Finalized test #1 as final.\n\n[Leaderboard] Results saved: {" in text
