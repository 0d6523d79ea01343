"""`data prepare fineweb10b`: layout, header checks, resume; a mock Hub, no network."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import numpy as np
import pytest
from typer.testing import CliRunner

from lossgym.trainer.data import DatasetError
from lossgym.trainer.fineweb import BASE_URL, prepare_fineweb, shard_plan
from lossgym.trainer.shards import read_shard, write_shard


class FakeHub:
    """Serves llm.c shards written by the test; honours Range requests; counts GETs."""

    def __init__(self, root: Path, names: list[str]) -> None:
        self.blobs: dict[str, bytes] = {}
        for i, name in enumerate(names):
            write_shard(root / name, np.arange(100 + i, dtype=np.uint16) + 1000 * i)
            self.blobs[name] = (root / name).read_bytes()
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        name = str(request.url).removeprefix(BASE_URL)
        if name not in self.blobs:
            return httpx.Response(404)
        body, rng = self.blobs[name], request.headers.get("range")
        if rng:
            start = int(rng.removeprefix("bytes=").rstrip("-"))
            return httpx.Response(206, content=body[start:])
        return httpx.Response(200, content=body)

    def client(self) -> httpx.Client:
        return httpx.Client(transport=httpx.MockTransport(self))


REMOTE = ["fineweb_val_000000.bin"] + [f"fineweb_train_{i:06d}.bin" for i in (1, 2, 3)]


@pytest.fixture
def hub(tmp_path) -> FakeHub:
    (tmp_path / "hub").mkdir()
    return FakeHub(tmp_path / "hub", REMOTE)


def _quiet(_msg: str) -> None:
    pass


def test_plan_renames_into_our_layout():
    assert shard_plan(2) == {
        "val_000000.bin": "fineweb_val_000000.bin",
        "train_000000.bin": "fineweb_train_000001.bin",
        "train_000001.bin": "fineweb_train_000002.bin",
        "monitor_000000.bin": "fineweb_train_000003.bin",
    }
    with pytest.raises(DatasetError, match="between 1 and"):
        shard_plan(0)


def test_downloads_verifies_and_renames(tmp_path, hub):
    out = prepare_fineweb(tmp_path / "data", 2, _quiet, client=hub.client())
    assert out == tmp_path / "data" / "fineweb10b"
    assert sorted(p.name for p in out.glob("*.bin")) == [
        "monitor_000000.bin", "train_000000.bin", "train_000001.bin", "val_000000.bin",
    ]  # fmt: skip
    for local, remote in shard_plan(2).items():
        assert (out / local).read_bytes() == hub.blobs[remote]
    assert read_shard(out / "monitor_000000.bin")[0] == 3000  # fineweb_train_000003
    meta = json.loads((out / "meta.json").read_text())
    assert meta["complete"] and meta["token_counts"]["val_000000.bin"] == 100
    assert not list(out.glob("*.part"))


def test_rerun_skips_complete_files(tmp_path, hub):
    prepare_fineweb(tmp_path, 2, _quiet, client=hub.client())
    n = len(hub.requests)
    prepare_fineweb(tmp_path, 2, _quiet, client=hub.client())
    assert len(hub.requests) == n


def test_resumes_a_partial_download(tmp_path, hub):
    target = tmp_path / "fineweb10b"
    target.mkdir()
    blob = hub.blobs["fineweb_val_000000.bin"]
    (target / "val_000000.bin.part").write_bytes(blob[:700])
    prepare_fineweb(tmp_path, 1, _quiet, client=hub.client())
    assert (target / "val_000000.bin").read_bytes() == blob
    assert hub.requests[0].headers["range"] == "bytes=700-"


def test_bad_shard_is_rejected_with_a_clear_error(tmp_path, hub):
    hub.blobs["fineweb_train_000001.bin"] = b"\x00" * 2048
    with pytest.raises(DatasetError, match=r"fineweb_train_000001\.bin is not a valid.*magic"):
        prepare_fineweb(tmp_path, 1, _quiet, client=hub.client())
    target = tmp_path / "fineweb10b"
    assert not (target / "train_000000.bin").exists()
    assert not list(target.glob("*.part")) and not (target / "meta.json").exists()


def test_missing_and_unreachable_name_the_url(tmp_path, hub):
    with pytest.raises(DatasetError, match=r"cannot download .*fineweb_train_000004\.bin: .*404"):
        prepare_fineweb(tmp_path, 3, _quiet, client=hub.client())

    def offline(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("Name or service not known", request=request)

    client = httpx.Client(transport=httpx.MockTransport(offline))
    with pytest.raises(DatasetError) as info:
        prepare_fineweb(tmp_path / "x", 1, _quiet, client=client)
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith(f"cannot download {BASE_URL}fineweb_val_000000.bin:")


def test_cli_reports_one_line(tmp_path, monkeypatch):
    import lossgym.trainer.fineweb as fineweb

    def fail(*_args, **_kwargs):
        raise DatasetError("cannot download https://example/x.bin: offline")

    monkeypatch.setattr(fineweb, "prepare_fineweb", fail)
    from lossgym.cli import app

    args = ["data", "prepare", "fineweb10b", "--shards", "2", "--data-dir", str(tmp_path)]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 1
    assert "failed: cannot download https://example/x.bin: offline" in result.output
