"""The contact sheet of a permutation set: one JPEG, a grid of tiles, each labelled with its variant.

A view, like the Block Kit payloads beside it: pure presentation of results that are already decided
(bytes in, bytes out, no I/O), so the domain stays free of layout and fonts. Tiles keep the variants'
order, left to right and top to bottom, so "tile 3" means the same thing on the sheet and in its table.
"""

from __future__ import annotations

import io
import math
from dataclasses import dataclass

from PIL import Image, ImageDraw, ImageFont, ImageOps

BACKGROUND = (24, 24, 27)
MISSING_FILL = (72, 72, 78)
LABEL_COLOUR = (240, 240, 240)
GAP = 8
"""Pixels between tiles and around the sheet."""
JPEG_QUALITY = 85


@dataclass(frozen=True)
class Tile:
    """One image of the sheet and its label; `image` None draws a grey tile saying `missing` instead
    (`missing` is ignored when there is an image, and "unreadable" shown when it cannot be decoded)."""

    label: str
    image: bytes | None
    missing: str = "failed"


@dataclass(frozen=True)
class Geometry:
    """Where tiles go: a `columns` × `rows` grid of `cell`-pixel squares, each above a label band."""

    columns: int
    rows: int
    cell: int
    label_height: int

    @property
    def size(self) -> tuple[int, int]:
        """The sheet's (width, height) in pixels."""
        width = GAP + self.columns * (self.cell + GAP)
        height = GAP + self.rows * (self.cell + self.label_height + GAP)
        return width, height

    def image_box(self, index: int) -> tuple[int, int, int, int]:
        """(left, top, right, bottom) of tile `index`'s image square."""
        row, column = divmod(index, self.columns)
        left = GAP + column * (self.cell + GAP)
        top = GAP + row * (self.cell + self.label_height + GAP)
        return left, top, left + self.cell, top + self.cell

    def label_box(self, index: int) -> tuple[int, int, int, int]:
        """(left, top, right, bottom) of tile `index`'s label band."""
        left, _, right, bottom = self.image_box(index)
        return left, bottom, right, bottom + self.label_height


def geometry(count: int) -> Geometry:
    """The grid for `count` tiles: as square as it gets (ceil √count columns); cells of 512 px up to 4
    tiles, 384 up to 9, 256 beyond, so the sheet stays near 2000 px across at most."""
    columns = max(1, math.ceil(math.sqrt(count)))
    rows = max(1, math.ceil(count / columns))
    cell = 512 if count <= 4 else 384 if count <= 9 else 256
    return Geometry(columns, rows, cell, label_height=font_size(cell) * 2)


def font_size(cell: int) -> int:
    """The label's font size for a cell: readable at Slack's preview size (at least 16 px)."""
    return max(16, cell // 16)


def compose(tiles: list[Tile]) -> bytes:
    """The sheet as JPEG bytes (an undecodable image becomes a missing tile saying "unreadable")."""
    grid = geometry(len(tiles))
    sheet = Image.new("RGB", grid.size, BACKGROUND)
    draw = ImageDraw.Draw(sheet)
    font = ImageFont.load_default(size=font_size(grid.cell))
    for index, tile in enumerate(tiles):
        left, top, right, bottom = grid.image_box(index)
        picture = _decoded(tile.image)
        if picture is None:
            draw.rectangle((left, top, right - 1, bottom - 1), fill=MISSING_FILL)
            note = tile.missing if tile.image is None else "unreadable"
            draw.text(
                ((left + right) / 2, (top + bottom) / 2), note, fill=LABEL_COLOUR, font=font, anchor="mm"
            )
        else:
            fitted = ImageOps.contain(picture, (grid.cell, grid.cell))
            sheet.paste(
                fitted, (left + (grid.cell - fitted.width) // 2, top + (grid.cell - fitted.height) // 2)
            )
        label_left, label_top, label_right, label_bottom = grid.label_box(index)
        text = _fitted(tile.label, font, label_right - label_left)
        draw.text(
            (label_left, (label_top + label_bottom) / 2), text, fill=LABEL_COLOUR, font=font, anchor="lm"
        )
    output = io.BytesIO()
    sheet.save(output, format="JPEG", quality=JPEG_QUALITY)
    return output.getvalue()


def shrink(data: bytes, side: int) -> bytes | None:
    """The picture scaled to fit a `side`-pixel square, as PNG bytes (None: not a readable image)."""
    picture = _decoded(data)
    if picture is None:
        return None
    output = io.BytesIO()
    ImageOps.contain(picture, (side, side)).save(output, format="PNG")
    return output.getvalue()


def _decoded(data: bytes | None) -> Image.Image | None:
    if data is None:
        return None
    try:
        with Image.open(io.BytesIO(data)) as image:
            image.draft("RGB", (512, 512))
            return image.convert("RGB")
    except (OSError, ValueError, Image.DecompressionBombError):
        return None


def _fitted(text: str, font: ImageFont.FreeTypeFont | ImageFont.ImageFont, width: int) -> str:
    """`text`, cut with an ellipsis where it would overflow `width` pixels."""
    if font.getlength(text) <= width:
        return text
    while text and font.getlength(text + "…") > width:
        text = text[:-1]
    return text.rstrip() + "…"
