"""Reference images: accepted as they are, converted, or refused with a reason."""

from __future__ import annotations

import io

import pytest
from PIL import Image

from bot.domain.images import ImageRejectedError, prepare_image


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
