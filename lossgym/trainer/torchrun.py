"""torchrun itself (`torch.distributed.run.main`), minus its interpreter's teardown.

    python -I -m lossgym.trainer.torchrun --standalone --nproc_per_node=2 ...

Takes torchrun's arguments and runs the real launcher. Once its workers are
done it exits at once with torchrun's status: tearing down an interpreter with
torch loaded takes most of a second on 2 cores, paid by every test.
"""

from __future__ import annotations

import os
import sys
import traceback

from torch.distributed.run import main as torchrun_main


def main() -> None:
    code = 0
    try:
        torchrun_main()
    except SystemExit as stop:
        code = stop.code if isinstance(stop.code, int) else (0 if stop.code is None else 1)
    except BaseException:  # noqa: BLE001 - printed as Python would, status 1 as torchrun's
        traceback.print_exc()
        code = 1
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


if __name__ == "__main__":
    main()
