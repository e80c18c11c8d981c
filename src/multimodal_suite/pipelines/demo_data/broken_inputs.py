"""The broken files real collections have, made on purpose so every pipeline shows it survives them.

Each maker is deterministic: the same good bytes give the same broken bytes.
"""
from __future__ import annotations

import io
import struct
import tarfile
import zlib

from PIL import Image

HTML_ERROR_PAGE = (
    b"<!DOCTYPE html>\n<html><head><title>404 Not Found</title></head>\n"
    b"<body><h1>Not Found</h1><p>The requested image was not found on this server.</p></body></html>\n"
)


def zero_byte_file() -> bytes:
    """An empty file, as an interrupted download or a full disk leaves it."""
    return b""


def truncated_jpeg(jpeg: bytes) -> bytes:
    """The first third of ``jpeg``: the header still says JPEG, the scan data ends early."""
    return jpeg[: len(jpeg) // 3]


def html_page_as_image() -> bytes:
    """A server's 404 page saved under an image name, as scrapers store failed downloads."""
    return HTML_ERROR_PAGE


def tar_cut_mid_member(tar_bytes: bytes, member_name: str) -> bytes:
    """``tar_bytes`` cut halfway through the data of ``member_name``: the members before it stay readable."""
    with tarfile.open(fileobj=io.BytesIO(tar_bytes), mode="r:") as tar:
        info = tar.getmember(member_name)
    return tar_bytes[: info.offset_data + info.size // 2]


def _tiny(image_format: str) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (16, 16), "red").save(buffer, format=image_format)
    return buffer.getvalue()


def decompression_bomb_jpeg(width: int = 60_000, height: int = 60_000) -> bytes:
    """A valid 16 × 16 JPEG whose SOF0 header claims ``width`` × ``height`` pixels (a few hundred bytes on disk)."""
    data = _tiny("JPEG")
    sof = data.index(b"\xff\xc0")
    return data[: sof + 5] + struct.pack(">HH", height, width) + data[sof + 9 :]


def decompression_bomb_png(width: int = 60_000, height: int = 60_000) -> bytes:
    """A valid 16 × 16 PNG whose IHDR claims ``width`` × ``height`` pixels, its CRC fixed so readers trust it."""
    data = _tiny("PNG")
    start = data.index(b"IHDR") + 4
    body = struct.pack(">II", width, height) + data[start + 8 : start + 13]
    return data[:start] + body + struct.pack(">I", zlib.crc32(b"IHDR" + body)) + data[start + 17 :]
