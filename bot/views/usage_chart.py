"""The usage report's bar chart: images per day as a PNG (Pillow), today's bar marked.

A view, not domain logic: it only draws numbers the report already computed, the way Block Kit views
lay out text. Pure: numbers and labels in, PNG bytes out.
"""

from __future__ import annotations

import io
import math
from collections.abc import Sequence

from PIL import Image, ImageDraw, ImageFont

WIDTH, HEIGHT = 840, 420
LEFT, RIGHT, TOP, BOTTOM = 56, 24, 56, 56
BACKGROUND = (255, 255, 255)
BAR = (74, 111, 227)
TODAY = (232, 116, 59)
"""Today's bar: a different hue, and labelled "today" under its day."""
INK = (40, 40, 40)
GRID = (225, 225, 225)
BAR_SHARE = 0.66
"""How much of its day's slot a bar fills."""


def nice_ceiling(value: int) -> int:
    """The smallest of 1, 2, 5 × 10^k at or above `value` (the axis top); 1 for nothing."""
    if value <= 1:
        return 1
    power: int = 10 ** int(math.log10(value))
    for step in (1, 2, 5, 10):
        if step * power >= value:
            return step * power
    return 10 * power


def bar_chart(counts: Sequence[int], labels: Sequence[str], *, title: str) -> bytes:
    """A PNG of one bar per count, left to right, with `labels` under them; the last bar is today."""
    if len(counts) != len(labels) or not counts:
        raise ValueError("one label per count, at least one count")
    image = Image.new("RGB", (WIDTH, HEIGHT), BACKGROUND)
    draw = ImageDraw.Draw(image)
    font = ImageFont.load_default(size=14)
    heading = ImageFont.load_default(size=18)
    draw.text((LEFT, 18), title, fill=INK, font=heading)

    top_value = nice_ceiling(max(counts))
    base = HEIGHT - BOTTOM
    plot_height = base - TOP
    for value in (0, top_value // 2, top_value) if top_value > 1 else (0, top_value):
        y = base - round(plot_height * value / top_value)
        draw.line([(LEFT, y), (WIDTH - RIGHT, y)], fill=GRID, width=1)
        draw.text((LEFT - 8, y), str(value), fill=INK, font=font, anchor="rm")

    slot = (WIDTH - LEFT - RIGHT) / len(counts)
    bar_width = max(round(slot * BAR_SHARE), 1)
    last = len(counts) - 1
    for index, (count, label) in enumerate(zip(counts, labels, strict=True)):
        centre = LEFT + slot * (index + 0.5)
        x0 = round(centre - bar_width / 2)
        colour = TODAY if index == last else BAR
        height = round(plot_height * count / top_value)
        if height > 0:
            draw.rectangle([(x0, base - height), (x0 + bar_width - 1, base - 1)], fill=colour)
        draw.text((centre, base - height - 4), str(count), fill=INK, font=font, anchor="md")
        draw.text((centre, base + 6), label, fill=INK, font=font, anchor="ma")
        if index == last:
            draw.text((centre, base + 26), "today", fill=TODAY, font=font, anchor="ma")

    output = io.BytesIO()
    image.save(output, format="PNG", optimize=True)
    return output.getvalue()
