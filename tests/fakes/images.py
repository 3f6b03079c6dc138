"""Deterministic, real PNG images for the fake Oxen (sized like Seedream's presets)."""

from __future__ import annotations

import functools
import hashlib
import io
import os

from PIL import Image, ImageDraw

_SIZES_2K = {
    "1:1": (2048, 2048),
    "16:9": (2560, 1440),
    "9:16": (1440, 2560),
    "4:3": (2304, 1728),
    "3:4": (1728, 2304),
    "3:2": (2496, 1664),
    "2:3": (1664, 2496),
}


def dimensions(size: str, aspect_ratio: str | None, scale: float = 1.0) -> tuple[int, int]:
    """Pixel size for a size preset and aspect ratio (unknown ratios and match_input_image → 1:1)."""
    width, height = _SIZES_2K.get(aspect_ratio or "1:1", _SIZES_2K["1:1"])
    factor = (2 if size.upper() == "4K" else 1) * scale
    return max(16, round(width * factor)), max(16, round(height * factor))


VARIANTS = 4


def render_png(prompt: str, seed: int | None, width: int, height: int) -> bytes:
    """A PNG chosen by (prompt, seed) among VARIANTS pictures of that size: same inputs, same bytes,
    and cheap enough that the fake never dominates a benchmark."""
    digest = hashlib.sha256(f"{prompt}\x00{seed}".encode()).digest()
    return _variant(digest[0] % VARIANTS, width, height)


@functools.lru_cache(maxsize=128)
def _variant(variant: int, width: int, height: int) -> bytes:
    digest = hashlib.sha256(f"variant {variant}".encode()).digest()
    image = Image.new("RGB", (width, height), tuple(digest[:3]))
    draw = ImageDraw.Draw(image)
    stripe = max(1, width // 8)
    for index in range(0, width, stripe * 2):
        draw.rectangle((index, 0, index + stripe - 1, height), fill=tuple(digest[3:6]))
    output = io.BytesIO()
    image.save(output, format="PNG")
    return output.getvalue()


@functools.lru_cache(maxsize=8)
def textured_png(width: int, height: int) -> bytes:
    """A PNG of smooth noise: sized like a real result (several MB at 2K), unlike the flat pictures above."""
    noise = Image.frombytes(
        "RGB", (max(1, width // 4), max(1, height // 4)), os.urandom(width * height * 3 // 16)
    )
    output = io.BytesIO()
    noise.resize((width, height), Image.Resampling.BILINEAR).save(output, format="PNG", compress_level=1)
    return output.getvalue()


def warm(size: str, aspect_ratio: str | None, scale: float, *, textured: bool = False) -> None:
    """Render every picture of one size ahead of time (benchmarks call this in a thread first)."""
    width, height = dimensions(size, aspect_ratio, scale)
    if textured:
        textured_png(width, height)
    for variant in range(VARIANTS):
        _variant(variant, width, height)
