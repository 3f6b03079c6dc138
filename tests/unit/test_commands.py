"""`/imagine` text: subcommands only on their exact shapes, everything else a prompt."""

from __future__ import annotations

import pytest

from bot.domain.commands import (
    Command,
    Help,
    History,
    Prompt,
    Recipe,
    Show,
    Top,
    UsageError,
    Vote,
    parse_command,
)
from bot.domain.votes import Period


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("", Help()),
        ("  help ", Help()),
        ("--help", Help()),
        ("show 0123abcdef", Show("0123abcdef")),
        ("show 0123ABCDEF", Show("0123abcdef")),
        ("seed 0123abcdef", Recipe("0123abcdef")),
        ("seed 42 a blue owl --ar 3:2", Prompt("a blue owl --ar 3:2 --seed 42")),
        ("history", History(())),
        ("history 12", History(("12",))),
        ("history 51", History(("51",))),
        ("history export", History(("export",))),
        ("History Export", History(("export",))),
        ("history 15 red fox", History(("15", "red", "fox"))),
        ("top week 3", Top(Period.WEEK, 3)),
        ("vote 90m", Vote(5400)),
    ],
)
def test_subcommands_on_their_exact_shapes(text: str, expected: Command) -> None:
    assert parse_command(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        "seed pods floating on water",
        "show stoppers",
        "show 0123abcdef at the gallery",
        "show",
        "history of the roman empire, oil painting",
        "history 1984 propaganda poster",
        "history export of tea, 1800s map",
        "help me draw a cat",
        "seed deadbeef",
        "history --ar 16:9",
    ],
)
def test_anything_else_is_a_prompt(text: str) -> None:
    assert parse_command(text) == Prompt(text)


@pytest.mark.parametrize("dash", ["--", "—", "–"])
def test_a_leading_double_dash_forces_a_prompt(dash: str) -> None:
    assert parse_command(f"{dash} show 0123abcdef") == Prompt("show 0123abcdef")
    assert parse_command(f"{dash}   help") == Prompt("help")
    assert parse_command(f"{dash} seed 42\nline two --n 2") == Prompt("seed 42\nline two --n 2")


def test_a_seed_number_without_a_prompt_is_explained() -> None:
    parsed = parse_command("seed 42")
    assert isinstance(parsed, UsageError)
    assert "/imagine seed 42 a lighthouse" in parsed.message
    assert "/imagine -- seed 42" in parsed.message


def test_the_seed_prompt_keeps_its_lines() -> None:
    assert parse_command("seed 7 first line\nsecond line") == Prompt("first line\nsecond line --seed 7")
