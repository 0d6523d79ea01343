"""Parsing TRAIN_METRICS lines: strict format, progress only."""

from lossgym.sandbox.stages import parse_train_metrics


def test_parses_only_well_formed_lines() -> None:
    log = "\n".join(
        [
            "iter 10: loss 7.1, 800ms/iter",
            "TRAIN_METRICS: step=20, train_loss=6.5000, val_loss=6.6000",
            "TRAIN_METRICS: step=40, train_loss=5.9000, val_loss=6.1000",
            "Final metrics (gpt-tiny): val_loss_gpt-tiny=0.0001",
            "TRAIN_METRICS: step=x, train_loss=1, val_loss=1",
            "prefix TRAIN_METRICS: step=60, train_loss=1.0, val_loss=1.0",
        ]
    )
    curve, lines = parse_train_metrics(log)
    assert curve == [[20, 6.5, 6.6], [40, 5.9, 6.1]]
    assert lines == [
        "TRAIN_METRICS: step=20, train_loss=6.5000, val_loss=6.6000",
        "TRAIN_METRICS: step=40, train_loss=5.9000, val_loss=6.1000",
    ]


def test_agent_log_drops_the_launcher_report() -> None:
    from lossgym.sandbox.stages import agent_log

    log = "\n".join(
        [
            "iter 10: loss 7.0",
            "[rank0]: Traceback (most recent call last):",
            '[rank0]:   File "nanoGPT/custom_pretrain.py", line 217, in compute_loss',
            "[rank0]: RuntimeError: late failure",
            "W1124 05:34:34.1 1 torch/distributed/elastic/multiprocessing/api.py:900] Sending SIGTERM",
            "Traceback (most recent call last):",
            '  File "run.py", line 1019, in run',
            "torch.distributed.elastic.multiprocessing.errors.ChildFailedError: ",
            "nanoGPT/custom_pretrain.py FAILED",
        ]
    )
    cleaned = agent_log(log)
    assert cleaned.rstrip().endswith("[rank0]: RuntimeError: late failure")
    assert "ChildFailedError" not in cleaned and "Sending SIGTERM" not in cleaned


def test_a_line_cut_by_the_log_window_is_not_read(tmp_path) -> None:
    """A second red-team pass: an agent line padded past the 1 MB window lost its
    `[loss] ` prefix at the cut, and stripping it made a TRAIN_METRICS line."""
    from lossgym.sandbox.stages import LOG_READ_BYTES, _read_text

    real = "TRAIN_METRICS: step=10, train_loss=5.0000, val_loss=5.1000\n"
    forged = (
        "[loss] "
        + " " * (LOG_READ_BYTES + 100)
        + "TRAIN_METRICS: step=99, train_loss=0.1, val_loss=0.1\n"
    )
    log = tmp_path / "train.log"
    log.write_text(real + forged + real.replace("step=10", "step=20"))
    curve, _ = parse_train_metrics(_read_text(log))
    assert curve == [[20, 5.0, 5.1]]
    assert parse_train_metrics("  " + real)[0] == []  # only whole lines, from their start
