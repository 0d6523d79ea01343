"""Only whole TRAIN_METRICS lines leave a training log for the event stream."""

from __future__ import annotations

from lossgym.sandbox.events import train_lines

GOOD = "TRAIN_METRICS: step=2, train_loss=9.1234, val_loss=9.2345"


def test_only_whole_train_metrics_lines_pass() -> None:
    log = (
        "step 1: loss 9.9\n"
        f"{GOOD}\n"
        f"[loss] {GOOD}\n"  # an agent print that imitates the format
        f"  {GOOD} extra\n"
        "TRAIN_METRICS: step=3, train_loss=1, val_loss=2; rm -rf /\n"
        "TRAIN_METRICS: step=4, train_lo"  # still being written
    ).encode()
    lines, consumed = train_lines(log)
    assert lines == [GOOD]
    assert log[consumed:] == b"TRAIN_METRICS: step=4, train_lo"  # read again once complete
    assert train_lines(b"") == ([], 0)
