"""The 14-day bar chart: a PNG of the right size, one bar per day with heights in proportion, today's bar
in its own colour, and no bar for a day without images."""

from __future__ import annotations

import io

import pytest
from PIL import Image

from bot.views import usage_chart as chart

COUNTS = [3, 1, 5, 12, 40, 7, 1, 2, 2, 9, 14, 22, 6, 18]
LABELS = [f"Mon {day:02d}" for day in range(1, 15)]


def runs(row: list[tuple[int, int, int]]) -> list[tuple[tuple[int, int, int], int, int]]:
    """(colour, first x, last x) of each stretch of bar-coloured pixels in a pixel row."""
    found: list[tuple[tuple[int, int, int], int, int]] = []
    for x, pixel in enumerate(row):
        if pixel not in (chart.BAR, chart.TODAY):
            continue
        if found and found[-1][0] == pixel and found[-1][2] == x - 1:
            found[-1] = (pixel, found[-1][1], x)
        else:
            found.append((pixel, x, x))
    return found


def decode(png: bytes) -> Image.Image:
    image = Image.open(io.BytesIO(png))
    assert image.format == "PNG"
    return image.convert("RGB")


def row_above_baseline(image: Image.Image) -> list[tuple[int, int, int]]:
    y = chart.HEIGHT - chart.BOTTOM - 1
    return [image.getpixel((x, y)) for x in range(image.width)]  # type: ignore[misc]


def bar_height(image: Image.Image, x: int, colour: tuple[int, int, int]) -> int:
    return sum(image.getpixel((x, y)) == colour for y in range(image.height))


def test_fourteen_bars_in_proportion_with_today_marked() -> None:
    image = decode(chart.bar_chart(COUNTS, LABELS, title="Images per day"))
    assert image.size == (chart.WIDTH, chart.HEIGHT)
    bars = runs(row_above_baseline(image))
    assert len(bars) == 14
    assert [colour for colour, _, _ in bars] == [chart.BAR] * 13 + [chart.TODAY]
    widths = {last - first + 1 for _, first, last in bars}
    [width] = widths
    assert width >= 20, "equal bars, wide enough to read"
    heights = [bar_height(image, (first + last) // 2, colour) for colour, first, last in bars]
    top = chart.nice_ceiling(max(COUNTS))
    plot = chart.HEIGHT - chart.BOTTOM - chart.TOP
    assert heights == [round(plot * count / top) for count in COUNTS]


def test_a_day_without_images_has_no_bar() -> None:
    counts = [0] * 13 + [4]
    image = decode(chart.bar_chart(counts, LABELS, title="Images per day"))
    [(colour, _, _)] = runs(row_above_baseline(image))
    assert colour == chart.TODAY
    empty = decode(chart.bar_chart([0] * 14, LABELS, title="Nothing yet"))
    assert runs(row_above_baseline(empty)) == []


def test_axis_top_is_a_round_number_and_labels_must_match() -> None:
    assert [chart.nice_ceiling(v) for v in (0, 1, 2, 3, 7, 10, 11, 40, 51, 999)] == [
        1, 1, 2, 5, 10, 10, 20, 50, 100, 1000,
    ]  # fmt: skip
    with pytest.raises(ValueError, match="one label per count"):
        chart.bar_chart([1, 2], ["one"], title="x")
