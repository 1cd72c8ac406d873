"""Media the cases send, built here so no case needs a file or the network."""

from __future__ import annotations

import base64
import struct
import zlib


def tiny_png() -> bytes:
    """A valid 1x1 red PNG: enough for a server to see an image."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", 1, 1, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(b"\x00\xff\x00\x00")) + chunk(b"IEND", b""))


def tiny_png_base64() -> str:
    return base64.b64encode(tiny_png()).decode()


def tiny_png_data_url() -> str:
    return "data:image/png;base64," + tiny_png_base64()
