"""Counting colours in a PNG screenshot, with the standard library only (zlib).

Enough of PNG for Chromium's screenshots: 8-bit RGB or RGBA, not interlaced,
any of the five row filters.
"""

from __future__ import annotations

import struct
import zlib
from collections import Counter
from pathlib import Path

SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _chunks(data: bytes) -> tuple[bytes, bytes]:
    """(IHDR, the joined IDAT data) of a PNG file's bytes."""
    assert data[:8] == SIGNATURE, "not a PNG"
    at, header, idat = 8, b"", bytearray()
    while at < len(data):
        (length,) = struct.unpack(">I", data[at : at + 4])
        kind, body = data[at + 4 : at + 8], data[at + 8 : at + 8 + length]
        if kind == b"IHDR":
            header = body
        elif kind == b"IDAT":
            idat += body
        at += 12 + length
    return header, bytes(idat)


def _paeth(a: int, b: int, c: int) -> int:
    p = a + b - c
    pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
    return a if pa <= pb and pa <= pc else (b if pb <= pc else c)


def _unfilter(kind: int, row: bytearray, prior: bytes, bpp: int) -> None:
    """Undo one row's filter in place (`prior` is the previous row, already undone)."""
    if kind == 0:
        return
    for i in range(len(row)):
        a = row[i - bpp] if i >= bpp else 0
        b = prior[i]
        c = prior[i - bpp] if i >= bpp else 0
        guess = (a, b, (a + b) // 2, _paeth(a, b, c))[kind - 1]
        row[i] = (row[i] + guess) & 0xFF


def colour_counts(path: Path) -> Counter[tuple[int, int, int]]:
    """How many pixels of the image have each (r, g, b) colour."""
    header, idat = _chunks(path.read_bytes())
    width, height, depth, colour_type, _, _, interlace = struct.unpack(">IIBBBBB", header)
    assert depth == 8 and colour_type in (2, 6) and interlace == 0, header
    bpp = 3 if colour_type == 2 else 4
    raw, stride = zlib.decompress(idat), width * bpp
    counts: Counter[tuple[int, int, int]] = Counter()
    prior = bytes(stride)
    for y in range(height):
        start = y * (stride + 1)
        row = bytearray(raw[start + 1 : start + 1 + stride])
        _unfilter(raw[start], row, prior, bpp)
        counts.update(zip(row[0::bpp], row[1::bpp], row[2::bpp], strict=True))
        prior = bytes(row)
    return counts


def hex_rgb(colour: str) -> tuple[int, int, int]:
    """'#1f6feb' as (31, 111, 235)."""
    value = int(colour.lstrip("#"), 16)
    return (value >> 16) & 0xFF, (value >> 8) & 0xFF, value & 0xFF
