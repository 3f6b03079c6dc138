"""Reference images: accepted as they are, converted, or refused with a reason."""

from __future__ import annotations

import io
import struct
import zlib
from pathlib import Path

import pytest
from PIL import Image

from bot.domain.images import ImageKind, ImageRejectedError, identify_image, prepare_image


def encode(image: Image.Image, fmt: str, **options: object) -> bytes:
    output = io.BytesIO()
    image.save(output, format=fmt, **options)
    return output.getvalue()


def test_png_and_jpeg_within_limits_pass_untouched() -> None:
    png = encode(Image.new("RGB", (64, 48), "red"), "PNG")
    prepared = prepare_image(png, "a.png")
    assert (prepared.data, prepared.mimetype) == (png, "image/png")
    jpeg = encode(Image.new("RGB", (64, 48), "red"), "JPEG")
    assert prepare_image(jpeg, "a.jpg").mimetype == "image/jpeg"


@pytest.mark.parametrize(
    ("fmt", "mode", "expected"),
    [("WEBP", "RGB", "image/jpeg"), ("GIF", "P", "image/jpeg"), ("WEBP", "RGBA", "image/png")],
)
def test_webp_and_gif_are_converted(fmt: str, mode: str, expected: str) -> None:
    prepared = prepare_image(encode(Image.new(mode, (40, 30)), fmt), f"a.{fmt.lower()}")
    assert prepared.mimetype == expected
    assert Image.open(io.BytesIO(prepared.data)).format == ("PNG" if expected == "image/png" else "JPEG")


def test_oversized_images_are_scaled_down() -> None:
    prepared = prepare_image(encode(Image.new("RGB", (5000, 2500)), "PNG"), "big.png")
    assert Image.open(io.BytesIO(prepared.data)).size == (4096, 2048)


@pytest.mark.parametrize(
    ("data", "fragment"),
    [
        (b"<!DOCTYPE html><html>Sign in</html>", "not an image"),
        (b"\x00\x00\x00\x18ftypheic\x00\x00\x00\x00", "HEIC"),
        (encode(Image.new("RGB", (10, 100)), "PNG"), "at least 15 px"),
        (encode(Image.new("RGB", (20, 400)), "PNG"), "between 1:16 and 16:1"),
    ],
)
def test_unusable_files_are_refused_by_name(data: bytes, fragment: str) -> None:
    with pytest.raises(ImageRejectedError, match=fragment) as caught:
        prepare_image(data, "holiday.heic")
    assert "holiday.heic" in str(caught.value)


def png_header(width: int, height: int) -> bytes:
    """A small PNG file that claims `width`×`height` pixels in its header (its pixel data is a stub)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    pixels = zlib.compress(b"\x00" * 64)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", pixels) + chunk(b"IEND", b"")


@pytest.mark.parametrize(
    ("fmt", "mode", "mimetype", "extension"),
    [
        ("PNG", "RGB", "image/png", ".png"),
        ("JPEG", "RGB", "image/jpeg", ".jpg"),
        ("WEBP", "RGB", "image/webp", ".webp"),
        ("GIF", "P", "image/gif", ".gif"),
    ],
)
def test_results_are_identified_by_their_bytes_whatever_their_name(
    tmp_path: Path, fmt: str, mode: str, mimetype: str, extension: str
) -> None:
    path = tmp_path / "result.bin"
    path.write_bytes(encode(Image.new(mode, (40, 30)), fmt))
    assert identify_image(path) == ImageKind(fmt, mimetype, extension)


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"<!DOCTYPE html><html><body>This link has expired.</body></html>", "is not an image"),
        (bytes(range(256)) * 8, "is not an image"),
        (b"", "is not an image"),
        (encode(Image.new("RGB", (40, 30)), "PNG")[:60], "is not an image"),
        (
            encode(Image.new("RGB", (40, 30)), "BMP"),
            "is a BMP image; Dreamboard uploads JPEG, PNG, WebP or GIF only",
        ),
        (png_header(9_000, 8_000), "is 9000×8000, too large"),
        (png_header(20_000, 20_000), "is too large to be an image"),
    ],
)
def test_what_is_not_an_uploadable_image_is_refused_with_a_reason(
    tmp_path: Path, data: bytes, reason: str
) -> None:
    path = tmp_path / "result.png"
    path.write_bytes(data)
    with pytest.raises(ImageRejectedError) as caught:
        identify_image(path)
    assert str(caught.value).startswith(reason)
