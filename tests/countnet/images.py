"""Image helpers shared by the tests: a plain scene look, and PNG files with a chosen header."""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

# A plain look: objects at 0.9 on a 0.1 background, nothing else, so pixels can be thresholded.
PLAIN = {"contrast_min": 0.8, "contrast_max": 0.8, "background_min": 0.1, "background_max": 0.1,
         "jitter": 0.0, "invert_prob": 0.0, "gradient_max": 0.0, "blur_max": 0.0,
         "noise_max": 0.0}


def png_header(path: Path, width: int, height: int) -> None:
    """A tiny PNG whose header claims width x height (Pillow checks it before decoding)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return (struct.pack(">I", len(data)) + kind + data
                + struct.pack(">I", zlib.crc32(kind + data)))
    path.write_bytes(b"\x89PNG\r\n\x1a\n"
                     + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0))
                     + chunk(b"IDAT", zlib.compress(b"\x00" * 64)) + chunk(b"IEND", b""))
