"""Inspecting and normalising reference images with Pillow before they are hosted for Oxen.

Seedream takes JPEG/PNG (and more, on some providers); the common safe ground (oxen-api.md §5.4,
Decisions 3) is JPEG or PNG, at most 10 MB, at most 4096 px on the long side, sides over 14 px and
an aspect ratio within 1:16 to 16:1. Anything else is converted, or refused with a reason.

Decoding is bounded: only the formats below are opened (Pillow's advice against its rarer decoders,
e.g. the FITS decompression bomb of CVE-2026-40192), the size in the header is checked before a
single pixel is decoded, `Image.MAX_IMAGE_PIXELS` is set to the same limit (Pillow warns above it
and raises DecompressionBombError above twice it; both are refusals here), truncated files stay
errors (`ImageFile.LOAD_TRUNCATED_IMAGES` is left False), and of a multi-frame file only the first
frame is ever decoded. Any exception Pillow raises on malformed bytes becomes an ImageRejectedError.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, ImageFile, ImageOps

MAX_HOSTED_BYTES = 10 * 1024 * 1024
MAX_LONG_SIDE = 4096
MIN_SIDE = 15
MAX_PIXELS = 64_000_000
OPENED_FORMATS = ("JPEG", "PNG", "WEBP", "GIF", "BMP", "TIFF")
"""The only Pillow decoders Dreamboard lets near user files (what people attach, what Oxen returns);
the JPEG decoder also opens multi-picture (MPO) camera files."""
Image.init()  # registers every plugin, so `formats=` can name those Image.open does not preload
Image.MAX_IMAGE_PIXELS = MAX_PIXELS
ImageFile.LOAD_TRUNCATED_IMAGES = False
UPLOADED_FORMATS = {
    "JPEG": ("image/jpeg", ".jpg"),
    "PNG": ("image/png", ".png"),
    "WEBP": ("image/webp", ".webp"),
    "GIF": ("image/gif", ".gif"),
}
"""Pillow format → (mimetype, extension) for the result files Dreamboard uploads to Slack."""
_HEIF_BRANDS = (b"ftypheic", b"ftypheix", b"ftyphevc", b"ftypmif1", b"ftypmsf1", b"ftypavif")


class ImageRejectedError(ValueError):
    """The bytes cannot be used as a reference; the message says why, for the user."""


@dataclass(frozen=True)
class PreparedImage:
    """Image bytes in a format every Seedream provider accepts."""

    data: bytes
    mimetype: str

    @property
    def extension(self) -> str:
        """File extension matching the mimetype."""
        return ".png" if self.mimetype == "image/png" else ".jpg"


@dataclass(frozen=True)
class ImageKind:
    """What a file's bytes are, as Pillow reads them."""

    format: str
    mimetype: str
    extension: str


def identify_image(path: Path) -> ImageKind:
    """The file's type from its bytes alone (never a name or a Content-Type), once its header's size is
    within MAX_PIXELS and every byte is checked: a PNG's chunk checksums are verified, anything else
    has its first frame decoded (a JPEG at 1/8 scale), so a truncated file is refused. Raises
    ImageRejectedError with a reason ("is not an image", …) meant to follow the file's description."""
    problem = "is not an image"
    try:
        with Image.open(path, formats=OPENED_FORMATS) as image:
            problem = "is a damaged or truncated image"
            width, height = image.size
            if width * height > MAX_PIXELS:
                raise ImageRejectedError(f"is {width}×{height}, too large to be an image Dreamboard uploads")
            image_format = str(image.format)
            if image_format == "PNG":
                image.verify()
            else:
                if image_format == "JPEG":
                    image.draft(image.mode, (max(1, width // 8), max(1, height // 8)))
                image.load()
    except ImageRejectedError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise ImageRejectedError("is too large to be an image Dreamboard uploads") from None
    except Exception:  # malformed bytes make Pillow raise almost anything
        raise ImageRejectedError(problem) from None
    if image_format not in UPLOADED_FORMATS:
        raise ImageRejectedError(f"is a {image_format} image; Dreamboard uploads JPEG, PNG, WebP or GIF only")
    mimetype, extension = UPLOADED_FORMATS[image_format]
    return ImageKind(image_format, mimetype, extension)


def prepare_image(data: bytes, name: str) -> PreparedImage:
    """Validate `data` as an image and convert it when needed; raises ImageRejectedError naming `name`."""
    if data[4:12] in _HEIF_BRANDS:
        raise ImageRejectedError(
            f"“{name}” is a HEIC/HEIF photo, which Dreamboard can't convert yet; share it as JPEG or PNG."
        )
    limit = f"references can have at most {MAX_PIXELS // 1_000_000} megapixels"
    try:
        image = Image.open(io.BytesIO(data), formats=OPENED_FORMATS)
        width, height = image.size
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise ImageRejectedError(f"“{name}” is far too large to use as a reference: {limit}.") from None
    except Exception:  # malformed bytes make Pillow raise almost anything
        raise ImageRejectedError(f"“{name}” is not an image Dreamboard can read.") from None
    if width * height > MAX_PIXELS:
        raise ImageRejectedError(f"“{name}” is {width}×{height}, too large to use as a reference: {limit}.")
    if min(width, height) < MIN_SIDE:
        raise ImageRejectedError(
            f"“{name}” is {width}×{height}; references need sides of at least {MIN_SIDE} px."
        )
    if max(width, height) > 16 * min(width, height):
        raise ImageRejectedError(f"“{name}” is {width}×{height}; references must be between 1:16 and 16:1.")
    fits = max(width, height) <= MAX_LONG_SIDE and len(data) <= MAX_HOSTED_BYTES
    if image.format in ("JPEG", "PNG") and fits and getattr(image, "n_frames", 1) == 1:
        _decode_first_frame(image, name)  # a truncated or corrupt file is refused, not sent on
        return PreparedImage(data, "image/jpeg" if image.format == "JPEG" else "image/png")
    return _reencode(image, name)


def _decode_first_frame(image: Image.Image, name: str) -> None:
    """Decode the first frame (the header's size was checked, so memory is bounded); a JPEG is decoded
    at the smallest scale that still covers MAX_LONG_SIDE (`draft`), which reads every byte anyway."""
    try:
        image.seek(0)
        if image.format == "JPEG":
            image.draft(image.mode, (MAX_LONG_SIDE, MAX_LONG_SIDE))
        image.load()
    except Exception:  # truncated and corrupt data raise OSError, SyntaxError, …
        raise ImageRejectedError(f"“{name}” is damaged or truncated, so Dreamboard can't read it.") from None


def _reencode(image: Image.Image, name: str) -> PreparedImage:
    _decode_first_frame(image, name)
    try:
        image = ImageOps.exif_transpose(image)
        image.thumbnail((MAX_LONG_SIDE, MAX_LONG_SIDE))
        has_alpha = image.mode in ("RGBA", "LA") or (image.mode == "P" and "transparency" in image.info)
        output = io.BytesIO()
        if has_alpha:
            image.convert("RGBA").save(output, format="PNG", optimize=True)
            mimetype = "image/png"
        else:
            image.convert("RGB").save(output, format="JPEG", quality=90)
            mimetype = "image/jpeg"
    except Exception:  # e.g. a malformed EXIF orientation
        raise ImageRejectedError(f"“{name}” could not be converted to JPEG or PNG.") from None
    if output.tell() > MAX_HOSTED_BYTES:
        raise ImageRejectedError(f"“{name}” is still over 10 MB after converting it.")
    return PreparedImage(output.getvalue(), mimetype)
