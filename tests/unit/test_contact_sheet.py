"""The contact sheet: grid geometry, each tile's picture where the geometry says, labels drawn in the
label bands, missing tiles grey, long labels cut, and a size that Slack takes easily."""

from __future__ import annotations

import io

import pytest
from PIL import Image, ImageStat

from bot.views.contact_sheet import BACKGROUND, GAP, MISSING_FILL, Tile, compose, geometry, shrink

COLOURS = [(200, 30, 30), (30, 200, 30), (30, 30, 200), (220, 200, 40), (200, 40, 200)]


def png(colour: tuple[int, int, int], size: tuple[int, int] = (64, 64)) -> bytes:
    output = io.BytesIO()
    Image.new("RGB", size, colour).save(output, format="PNG")
    return output.getvalue()


def mean(image: Image.Image, box: tuple[int, int, int, int]) -> tuple[float, ...]:
    return tuple(ImageStat.Stat(image.crop(box)).mean)


def brightest(image: Image.Image) -> int:
    """The largest value of a single-band image."""
    high = image.convert("L").getextrema()[1]
    assert isinstance(high, int | float)
    return int(high)


def close(found: tuple[float, ...], expected: tuple[float, ...], tolerance: float = 12) -> bool:
    return all(abs(a - b) <= tolerance for a, b in zip(found, expected, strict=True))


def inner(box: tuple[int, int, int, int], margin: int) -> tuple[int, int, int, int]:
    left, top, right, bottom = box
    return left + margin, top + margin, right - margin, bottom - margin


@pytest.mark.parametrize(
    ("count", "columns", "rows", "cell"),
    [
        (1, 1, 1, 512),
        (2, 2, 1, 512),
        (4, 2, 2, 512),
        (5, 3, 2, 384),
        (8, 3, 3, 384),
        (16, 4, 4, 256),
        (32, 6, 6, 256),
    ],
)
def test_the_grid_is_as_square_as_it_gets(count: int, columns: int, rows: int, cell: int) -> None:
    grid = geometry(count)
    assert (grid.columns, grid.rows, grid.cell) == (columns, rows, cell)
    width, height = grid.size
    assert width <= 2400
    assert grid.image_box(count - 1)[3] + grid.label_height <= height


def test_each_tile_shows_its_picture_and_label_where_the_geometry_says() -> None:
    tiles = [Tile(f"{n + 1} · variant {n + 1}", png(colour)) for n, colour in enumerate(COLOURS)]
    tiles.append(Tile("6 · blue, rain", None, "failed"))
    data = compose(tiles)
    sheet = Image.open(io.BytesIO(data))
    assert sheet.format == "JPEG"
    grid = geometry(len(tiles))
    assert sheet.size == grid.size
    assert len(data) < 3_000_000
    for index, colour in enumerate(COLOURS):
        assert close(mean(sheet, inner(grid.image_box(index), 8)), colour), index
    missing = mean(sheet, inner(grid.image_box(5), 4))
    assert close(missing, MISSING_FILL, tolerance=20), "a failed variant is a grey tile (with its note)"
    for index in range(len(tiles)):
        band = sheet.crop(grid.label_box(index)).convert("L")
        assert brightest(band) > 200, f"tile {index + 1}'s label is drawn in light text"
        assert close(tuple(ImageStat.Stat(band).mean), (sum(BACKGROUND) / 3,), tolerance=60)


def test_a_picture_keeps_its_aspect_ratio_inside_its_square() -> None:
    sheet = Image.open(io.BytesIO(compose([Tile("1 · wide", png((250, 250, 250), (160, 90)))])))
    grid = geometry(1)
    left, top, right, _bottom = grid.image_box(0)
    assert close(mean(sheet, (left + 4, top + 4, right - 4, top + 40)), BACKGROUND), "letterboxed above"
    assert close(mean(sheet, (left + 4, top + 240, right - 4, top + 270)), (250, 250, 250))


def test_unreadable_bytes_become_a_missing_tile_and_long_labels_are_cut() -> None:
    label = "1 · " + "a very long option " * 20
    sheet = Image.open(io.BytesIO(compose([Tile(label, b"not an image"), Tile("2 · ok", png((0, 0, 0)))])))
    grid = geometry(2)
    assert close(mean(sheet, inner(grid.image_box(0), 4)), MISSING_FILL, tolerance=20)
    _left, top, right, bottom = grid.label_box(0)
    gap = sheet.crop((right + 1, top, right + GAP - 1, bottom))
    assert brightest(gap) < 100, "the cut label stays inside its band"


def test_a_picture_is_shrunk_to_its_cell_before_it_waits_for_the_sheet() -> None:
    small = shrink(png((10, 120, 240), (2048, 1152)), 256)
    assert small is not None
    assert Image.open(io.BytesIO(small)).size == (256, 144)
    assert shrink(b"<html>sign in</html>", 256) is None
