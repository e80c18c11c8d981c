"""demo_data broken inputs: each maker gives bytes a reader must reject, and leaves what it should readable."""
from __future__ import annotations

import io
import tarfile

import pytest
from PIL import Image, UnidentifiedImageError

from multimodal_suite.pipelines.demo_data.broken_inputs import (
    decompression_bomb_jpeg,
    decompression_bomb_png,
    html_page_as_image,
    tar_cut_mid_member,
    truncated_jpeg,
    zero_byte_file,
)
from multimodal_suite.pipelines.demo_data.drawing import encode_jpeg
from multimodal_suite.pipelines.demo_data.tagging_collections import write_tar


@pytest.fixture(scope="module")
def jpeg() -> bytes:
    # image-sized: a third of the bytes then ends in the scan data, past the header
    return encode_jpeg(Image.effect_noise((160, 120), 40).convert("RGB"), quality=80)


def test_good_jpeg_decodes(jpeg: bytes) -> None:
    with Image.open(io.BytesIO(jpeg)) as image:
        image.load()
        assert image.size == (160, 120)


def test_zero_byte_file_is_no_image() -> None:
    assert zero_byte_file() == b""
    with pytest.raises(UnidentifiedImageError):
        Image.open(io.BytesIO(zero_byte_file()))


def test_truncated_jpeg_opens_but_does_not_decode(jpeg: bytes) -> None:
    cut = truncated_jpeg(jpeg)
    assert cut == jpeg[: len(jpeg) // 3] and cut.startswith(b"\xff\xd8")
    with Image.open(io.BytesIO(cut)) as image:  # the header is intact: size and format still read
        assert image.format == "JPEG" and image.size == (160, 120)
        with pytest.raises(OSError):
            image.load()


def test_html_page_is_no_image() -> None:
    page = html_page_as_image()
    assert page.startswith(b"<!DOCTYPE html>") and b"404" in page
    with pytest.raises(UnidentifiedImageError):
        Image.open(io.BytesIO(page))


def test_tar_cut_mid_member_keeps_the_members_before_it() -> None:
    members = [("a.jpg", b"A" * 700), ("a.json", b"{}"), ("b.jpg", b"B" * 900), ("b.json", b"{}")]
    whole = write_tar(members)
    cut = tar_cut_mid_member(whole, "b.jpg")
    assert whole.startswith(cut) and len(cut) < len(whole)
    read: dict[str, bytes] = {}
    with pytest.raises(tarfile.ReadError):
        with tarfile.open(fileobj=io.BytesIO(cut), mode="r|") as tar:
            for info in tar:
                read[info.name] = tar.extractfile(info).read()
    assert read == {"a.jpg": b"A" * 700, "a.json": b"{}"}


@pytest.mark.parametrize("make", [decompression_bomb_jpeg, decompression_bomb_png])
def test_decompression_bombs_are_tiny_files_whose_header_claims_a_huge_size(make):
    with Image.open(io.BytesIO(make(300, 200))) as image:  # the header alone; nothing is decoded
        assert image.size == (300, 200)
    bomb = make()
    assert len(bomb) < 2_000
    with pytest.raises(Image.DecompressionBombError):  # 60000 × 60000: PIL's own guard refuses the header
        Image.open(io.BytesIO(bomb))
