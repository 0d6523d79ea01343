"""The API process never imports torch, its in-process worker included (SPEC §2).

`lossgym serve` runs as a real subprocess under `python -X importtime`, which logs
every module the process imports, from any thread, to its stderr. One session
goes through edit, view, the free pre-flight and a test that trains and is
evaluated (tiny-cpu, by the server's own worker); then neither the import log nor
the process's memory map shows torch. The pre-flight smoke run, training and
evaluation are processes of their own (the runner's), which do not inherit
`-X importtime` and may import torch.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from lossgym.config import Settings
from tests.conftest import LiveServer, fast_tasks_dir, start_server

pytestmark = pytest.mark.slow
FILE = "nanoGPT/custom_pretrain.py"
TIMEOUT = httpx.Timeout(600.0)
# "import time:       412 |        981 |     lossgym.agent_api.app"
IMPORT_LINE = re.compile(r"^import time:\s+\d+ \|\s+\d+ \|\s*(\S+)\s*$")
LOSS = """def compute_loss(logits, targets):
    flat = logits.view(-1, logits.size(-1))
    return F.cross_entropy(flat, targets.view(-1), ignore_index=-1) * 1.0
"""


def imported_modules(log: str) -> list[str]:
    """The modules an `-X importtime` log says were imported, in order."""
    return [m[1] for line in log.splitlines() if (m := IMPORT_LINE.match(line))]


def torch_modules(modules: list[str]) -> list[str]:
    return [m for m in modules if m == "torch" or m.startswith("torch.")]


def test_the_import_log_parser_sees_torch() -> None:
    """The check below can fail: a log line of torch is found, a look-alike is not."""
    log = (
        "import time: self [us] | cumulative | imported package\n"
        "import time:       120 |        120 |   torch._C\n"
        "import time:      5000 |      91000 | torch\n"
        "import time:        80 |         80 |     torchvision_like\n"
    )
    assert imported_modules(log) == ["torch._C", "torch", "torchvision_like"]
    assert torch_modules(imported_modules(log)) == ["torch._C", "torch"]


@pytest.fixture
def traced_server(settings: Settings, tmp_path: Path) -> Iterator[LiveServer]:
    """`python -X importtime -m lossgym.cli serve --port 0 --worker`; its log holds the imports."""
    tasks = fast_tasks_dir(tmp_path, config={"max_iters": 10, "eval_interval": 2})
    traced = settings.model_copy(update={"tasks_dir": tasks})
    with start_server(traced, worker=True, python_flags=("-X", "importtime")) as server:
        yield server


def _post(base: str, path: str, headers: dict, body: dict | None = None) -> str:
    reply = httpx.post(f"{base}{path}", json=body, headers=headers, timeout=TIMEOUT)
    assert reply.status_code == 200, reply.text
    return reply.json()["text"]


def _mapped_torch_libraries(pid: int) -> list[str]:
    """Shared objects of torch in the process's memory (what `import torch` loads)."""
    maps = Path(f"/proc/{pid}/maps")
    if not maps.exists():
        return []
    paths = {line.split()[-1] for line in maps.read_text().splitlines() if "/" in line}
    return sorted(p for p in paths if "/torch/" in p or Path(p).name.startswith("libtorch"))


def test_serve_with_its_worker_never_imports_torch(traced_server: LiveServer) -> None:
    base, pid, log_path = traced_server.base, traced_server.pid, traced_server.log_path
    reply = httpx.post(f"{base}/sessions", json={"task": "llm-pretrain-loss", "agent": "no-torch"})
    assert reply.status_code == 201, reply.text
    headers = {"Authorization": f"Bearer {reply.json()['token']}"}
    (start, end), _ = [(r["start"], r["end"]) for r in reply.json()["regions"][FILE]]

    edit = {"op": "replace", "filename": FILE, "start_line": start, "end_line": end}
    assert _post(base, "/edit", headers, {**edit, "content": LOSS}).startswith("OK: Replaced")
    view = _post(base, "/view", headers, {"filename": FILE, "start_line": 1, "end_line": 5})
    assert view.startswith(f"[Current file: {FILE} |")
    assert _post(base, "/preflight", headers).startswith("OK: Pre-flight check passed")
    report = _post(base, "/test", headers)
    assert report.startswith("[Test #1]"), report
    assert re.search(r"^Final metrics \(gpt-tiny\): val_loss_gpt-tiny=\d+\.\d{4}$", report, re.M)

    mapped = _mapped_torch_libraries(pid)  # while the server still runs
    log = log_path.read_text(errors="replace")
    modules = imported_modules(log)
    # The log is read correctly and covers the server and its worker thread...
    for module in ("lossgym.agent_api.app", "lossgym.sandbox.worker", "uvicorn"):
        assert module in modules, f"{module} missing from the import log:\n{log[-4000:]}"
    assert "lossgym.sandbox.stages" in modules and "lossgym.sandbox.preflight" in modules
    # ...and torch is nowhere in it, nor in the process's memory.
    assert torch_modules(modules) == [], torch_modules(modules)[:10]
    assert mapped == []
