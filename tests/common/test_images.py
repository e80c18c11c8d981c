"""Image decoding: reduced-scale JPEG decoding keeps at least the size the model needs, and every kind of bad
bytes (a decompression bomb's header included) is one ImageDecodeError with its reason, refused before decoding."""
from __future__ import annotations

import io
import struct
import tracemalloc
import warnings
import zlib

import numpy as np
import pytest
from PIL import Image, ImageFile

from multimodal_suite.common.images import (
    DEFAULT_MAX_IMAGE_PIXELS,
    ImageDecodeError,
    decode_image,
    resize_for_model,
    verify_image,
)

BOMB_SIDE = 60_000  # 3.6 G pixels: 10.8 GB as RGB, from a few hundred bytes


def jpeg(width: int, height: int) -> bytes:
    pixels = np.random.default_rng(0).integers(0, 256, (height, width, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="JPEG", quality=90)
    return buffer.getvalue()


def png(width: int, height: int) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (width, height), "red").save(buffer, format="PNG")
    return buffer.getvalue()


def bomb_jpeg(width: int = BOMB_SIDE, height: int = BOMB_SIDE) -> bytes:
    """A valid 16 × 16 JPEG whose SOF0 header claims ``width`` × ``height``."""
    data = jpeg(16, 16)
    sof = data.index(b"\xff\xc0")  # marker, length (2), precision (1), height (2), width (2)
    return data[: sof + 5] + struct.pack(">HH", height, width) + data[sof + 9 :]


def bomb_png(width: int = BOMB_SIDE, height: int = BOMB_SIDE) -> bytes:
    """A valid 16 × 16 PNG whose IHDR claims ``width`` × ``height`` (with a correct CRC)."""
    data = png(16, 16)
    start = data.index(b"IHDR") + 4
    body = struct.pack(">II", width, height) + data[start + 8 : start + 13]
    return data[:start] + body + struct.pack(">I", zlib.crc32(b"IHDR" + body)) + data[start + 17 :]


def test_the_crafted_bombs_are_what_they_claim():
    for data in (bomb_jpeg(), bomb_png()):
        assert len(data) < 1000
        with pytest.raises(Image.DecompressionBombError):  # PIL itself refuses them at open, with its own error
            Image.open(io.BytesIO(data))


def test_jpeg_is_decoded_at_the_smallest_scale_that_still_covers_min_size():
    data = jpeg(800, 1200)
    assert decode_image(data).size == (800, 1200)
    assert decode_image(data, min_size=384).size == (400, 600)  # 1/2: 1/4 would give 200 < 384
    assert decode_image(data, min_size=64).size == (100, 150)  # 1/8, the smallest libjpeg scale
    assert decode_image(data, min_size=1000).size == (800, 1200)  # never upscaled, never below min_size


def test_reduced_decoding_changes_the_model_input_little():
    data = jpeg(800, 1200)
    full = resize_for_model(decode_image(data), 64).astype(int)
    reduced = resize_for_model(decode_image(data, min_size=64), 64).astype(int)
    assert full.shape == reduced.shape == (64, 64, 3)
    assert np.abs(full - reduced).mean() < 12  # noise image: the worst case for a smaller DCT


def test_png_ignores_min_size_and_bad_bytes_name_the_problem():
    assert decode_image(png(30, 20), min_size=8).size == (30, 20)
    with pytest.raises(ImageDecodeError, match="0 bytes") as empty:
        decode_image(b"", min_size=8)
    assert empty.value.kind == "empty"


@pytest.mark.parametrize("min_size", [None, 8])
def test_truncated_jpeg_is_an_undecodable_image(min_size):
    with pytest.raises(ImageDecodeError, match="(?i)truncated") as failure:
        decode_image(jpeg(64, 64)[:300], min_size=min_size)
    assert failure.value.kind == "undecodable"


@pytest.mark.parametrize("data, starts", [
    (np.random.default_rng(1).integers(0, 256, 512, dtype=np.uint8).tobytes(), "not a recognised image format"),
    (b"<!DOCTYPE html>\n<html><body>404 Not Found</body></html>", "not a recognised image format; starts with b'<!"),
])
def test_random_bytes_and_html_are_not_images(data, starts):
    with pytest.raises(ImageDecodeError) as failure:
        decode_image(data)
    assert failure.value.reason.startswith(starts) and failure.value.kind == "undecodable"


@pytest.mark.parametrize("make", [bomb_jpeg, bomb_png], ids=["jpeg", "png"])
def test_a_bomb_header_is_too_large_with_its_claimed_size(make):
    with pytest.raises(ImageDecodeError, match="image too large") as failure:
        decode_image(make(), min_size=32)
    assert failure.value.kind == "too_large"


@pytest.mark.parametrize("make", [bomb_jpeg, bomb_png], ids=["jpeg", "png"])
def test_a_bomb_is_refused_without_decoding_even_with_pils_guard_off(make, monkeypatch):
    """A library that sets ``Image.MAX_IMAGE_PIXELS = None`` must not open the door: the explicit limit holds,
    and no pixel is decoded (``load`` never runs, Python allocations stay tiny)."""
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", None)
    loads = []

    def refuse_load(self):
        loads.append(self.size)
        raise RuntimeError("load() reached for a bomb")

    monkeypatch.setattr(ImageFile.ImageFile, "load", refuse_load)
    data = make()
    tracemalloc.start()
    try:
        with pytest.raises(ImageDecodeError) as failure:
            decode_image(data, min_size=32)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert loads == []
    assert failure.value.kind == "too_large"
    assert f"{BOMB_SIDE} × {BOMB_SIDE}" in failure.value.reason and "max_image_pixels" in failure.value.reason
    assert peak < 2 * 2**20


def test_the_configured_limit_applies_below_pils_default():
    data = png(40, 30)  # 1200 pixels, far under PIL's own 89 M pixel threshold
    with pytest.raises(ImageDecodeError, match=r"40 × 30 = 1,200 pixels, over the limit of 1,199") as failure:
        decode_image(data, max_pixels=1199)
    assert failure.value.kind == "too_large"
    assert decode_image(data, max_pixels=1200).size == (40, 30)  # at the limit: decoded
    # the header size is what is checked: a JPEG at the limit decodes, at a reduced scale when asked
    assert decode_image(jpeg(64, 48), max_pixels=64 * 48, min_size=12).size == (16, 12)


def test_pils_own_guard_and_its_warning_become_reasons(monkeypatch):
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 500)
    with pytest.raises(ImageDecodeError, match="image too large") as failure:
        decode_image(png(40, 30))  # 1200 > 2 × 500: PIL's error
    assert failure.value.kind == "too_large"
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # 1200 in (1000, 2000]: PIL warns, raised here as an error
        monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)
        with pytest.raises(ImageDecodeError, match="image too large") as failure:
            decode_image(png(40, 30))
    assert failure.value.kind == "too_large"


class _EmptyOnLoadImage(ImageFile.ImageFile):
    """A format whose header says 3 × 7 pixels but whose data decodes to 0 × 7 (PIL refuses a zero-sized header
    at open, so the decoded size is checked too)."""

    format = "EMPTYONLOAD"

    def _open(self) -> None:
        self._size = (3, 7)
        self._mode = "RGB"
        self.tile = []

    def load(self):
        self._size = (0, 7)
        self.im = Image.core.new(self.mode, self._size)
        return super().load()


def test_an_image_that_decodes_to_zero_size_is_undecodable(monkeypatch):
    Image.init()
    accept = lambda prefix: prefix.startswith(b"EMPTYONLOAD")  # noqa: E731
    monkeypatch.setitem(Image.OPEN, "EMPTYONLOAD", (_EmptyOnLoadImage, accept))
    monkeypatch.setattr(Image, "ID", [*Image.ID, "EMPTYONLOAD"])
    with pytest.raises(ImageDecodeError, match=r"zero-sized image \(0 × 7") as failure:
        decode_image(b"EMPTYONLOAD....")
    assert failure.value.kind == "undecodable"


@pytest.mark.parametrize("limit", [0, -5, 1.5, True, None])
def test_a_bad_limit_is_a_setting_error_not_an_image_failure(limit):
    with pytest.raises(ValueError, match="max_image_pixels") as failure:
        decode_image(png(4, 4), max_pixels=limit)
    assert not isinstance(failure.value, ImageDecodeError)


@pytest.mark.parametrize("data, match", [
    (bomb_jpeg(), "image too large"), (bomb_png(), "image too large"), (jpeg(64, 64)[:300], "(?i)truncated"),
    (b"", "0 bytes"), (png(90, 90), "over the limit of 8,000"),
])
def test_verify_image_refuses_what_decode_image_refuses(data, match):
    verify_image(jpeg(64, 64), max_pixels=8000)
    with pytest.raises(ImageDecodeError, match=match):
        verify_image(data, max_pixels=8000)


def test_the_default_limit_stays_under_pils_warning_threshold():
    # With the defaults PIL's guard never fires for an image the project accepts (see DEFAULT_MAX_IMAGE_PIXELS).
    assert DEFAULT_MAX_IMAGE_PIXELS <= Image.MAX_IMAGE_PIXELS
