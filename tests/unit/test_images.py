"""Reference images: accepted as they are, converted, or refused with a reason."""

from __future__ import annotations

import io
import struct
import warnings
import zlib
from pathlib import Path

import pytest
from PIL import Image, ImageFile

from bot.domain.images import MAX_PIXELS, ImageKind, ImageRejectedError, identify_image, prepare_image

pytestmark = pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning")
"""Pillow warns about the files between MAX_PIXELS and twice that, which are refused here anyway."""


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
        (encode(Image.new("RGB", (40, 30)), "PNG")[:60], "is a damaged or truncated image"),
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


def noisy_jpeg(width: int = 64, height: int = 48) -> bytes:
    """A JPEG whose entropy-coded data is long enough that cutting it short is noticed."""
    pixels = Image.frombytes("RGB", (width, height), bytes(range(256)) * (width * height * 3 // 256 + 1))
    return encode(pixels, "JPEG", quality=95)


def many_frames_gif(frames: int) -> bytes:
    """An animated GIF of `frames` 32×32 frames."""
    images = [Image.new("P", (32, 32), index % 256) for index in range(frames)]
    return encode(images[0], "GIF", save_all=True, append_images=images[1:], duration=10)


@pytest.mark.parametrize(
    ("data", "fragment"),
    [
        (png_header(100_000, 100_000), "far too large to use as a reference"),
        (png_header(9_000, 8_000), "is 9000×8000, too large to use as a reference"),
        (noisy_jpeg()[:-200], "damaged or truncated"),
        (bytes(range(256)) * 40, "not an image Dreamboard can read"),
        (b"SIMPLE  =                    T" + b" " * 2850, "not an image Dreamboard can read"),
        (encode(Image.new("RGB", (40, 30)), "PNG")[:60], "damaged or truncated"),
    ],
    ids=["100k-square-header", "72-megapixels", "truncated-jpeg", "random-bytes", "fits", "truncated-png"],
)
def test_hostile_references_are_refused_by_name(data: bytes, fragment: str) -> None:
    with pytest.raises(ImageRejectedError, match=fragment) as caught:
        prepare_image(data, "<!channel>.png")
    assert "<!channel>.png" in str(caught.value)


def test_bomb_warning_threshold_is_a_refusal_even_when_warnings_are_errors() -> None:
    """Pillow warns above MAX_IMAGE_PIXELS (set to MAX_PIXELS) and raises above twice that; with the
    warning turned into an error (`-W error`) the file is refused the same way."""
    assert Image.MAX_IMAGE_PIXELS == MAX_PIXELS
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        with pytest.raises(ImageRejectedError, match="far too large"):
            prepare_image(png_header(9_000, 8_000), "wide.png")


def test_truncated_images_stay_errors() -> None:
    assert ImageFile.LOAD_TRUNCATED_IMAGES is False


def test_an_animated_gif_becomes_its_first_frame() -> None:
    prepared = prepare_image(many_frames_gif(300), "loop.gif")
    result = Image.open(io.BytesIO(prepared.data))
    assert (result.format, getattr(result, "n_frames", 1), result.size) == ("JPEG", 1, (32, 32))


def test_an_animated_png_is_not_sent_as_it_is() -> None:
    frames = [Image.new("RGB", (32, 32), (index, 0, 0)) for index in range(5)]
    apng = encode(frames[0], "PNG", save_all=True, append_images=frames[1:])
    prepared = prepare_image(apng, "loop.png")
    assert prepared.data != apng
    assert getattr(Image.open(io.BytesIO(prepared.data)), "n_frames", 1) == 1


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (noisy_jpeg()[:-200], "is a damaged or truncated image"),
        (png_header(100_000, 100_000), "is too large to be an image Dreamboard uploads"),
        (bytes(range(256)) * 40, "is not an image"),
    ],
    ids=["truncated-jpeg", "100k-square-header", "random-bytes"],
)
def test_hostile_results_are_refused_with_a_reason(tmp_path: Path, data: bytes, reason: str) -> None:
    path = tmp_path / "result.part"
    path.write_bytes(data)
    with pytest.raises(ImageRejectedError) as caught:
        identify_image(path)
    assert str(caught.value) == reason


def test_an_animated_gif_result_is_identified(tmp_path: Path) -> None:
    path = tmp_path / "result.part"
    path.write_bytes(many_frames_gif(300))
    assert identify_image(path) == ImageKind("GIF", "image/gif", ".gif")
