"""Parsing `/imagine` text into a GenerationRequest."""

from __future__ import annotations

import pytest

from bot.domain.requests import (
    USAGE,
    GenerationRequest,
    Limits,
    RequestError,
    parse_request,
    request_text,
    unescape_slack,
)


def test_prompt_and_every_flag() -> None:
    request = parse_request("a red fox in snow --ar 16:9 --size 4k --seed 42 --n 2 --model flux-2-dev")
    assert request == GenerationRequest(
        prompt="a red fox in snow", aspect_ratio="16:9", size="4K", seed=42, n=2, model="flux-2-dev"
    )


def test_defaults_leave_choices_to_settings_and_schema() -> None:
    assert parse_request("  a lighthouse  ") == GenerationRequest(prompt="a lighthouse")


@pytest.mark.parametrize(
    "text",
    ["fox --ar=16:9", "fox —ar 16:9", "fox –ar 16:9", "fox --aspect 16:9", "fox --AR 16x9", "--ar 16:9 fox"],
)
def test_flag_spellings(text: str) -> None:
    request = parse_request(text)
    assert (request.prompt, request.aspect_ratio) == ("fox", "16:9")


def test_line_breaks_in_the_prompt_are_kept() -> None:
    request = parse_request("a poster\n\ntitle:  SUMMER --ar 3:4\nsubtitle: 2026")
    assert (request.prompt, request.aspect_ratio) == ("a poster\ntitle: SUMMER\nsubtitle: 2026", "3:4")


def test_match_input_image_is_an_aspect_ratio() -> None:
    assert parse_request("fox --ar match_input_image").aspect_ratio == "match_input_image"


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("--ar 16:9", "prompt is empty"),
        ("", "prompt is empty"),
        ("fox --style raw", "Unknown flag `--style`"),
        ("fox --ar", "`--ar` needs a value"),
        ("fox --ar --size 2K", "`--ar` needs a value"),
        ("fox --ar 5:7", "`--ar 5:7` is not supported"),
        ("fox --size 8K", "`--size 8K` is not supported"),
        ("fox --seed abc", "`--seed abc` must be a whole number"),
        ("fox --seed 1.5", "must be a whole number"),
        ("fox --seed -3", "out of range"),
        ("fox --seed 2147483648", "out of range"),
        ("fox --n 0", "ask for 1 to 4 images"),
        ("fox --n 5", "ask for 1 to 4 images"),
        ("fox --n two", "ask for 1 to 4 images"),
        ("fox --seed 2147483647 --n 2", "needs seeds up to 2147483648"),
        ("fox --ar 1:1 --ar 16:9", "given twice"),
        ("fox --model ../etc", "not an Oxen model id"),
        ("fox --fresh=yes", "`--fresh` takes no value"),
        ("fox --fresh --fresh", "given twice"),
        ("fox --style raw", "Known flags: --ar, --size, --seed, --n, --model, --fresh, --nokit."),
    ],
)
def test_bad_input_is_explained(text: str, fragment: str) -> None:
    with pytest.raises(RequestError, match=None) as caught:
        parse_request(text)
    assert fragment in str(caught.value)


def test_prompt_limit_comes_from_the_schema() -> None:
    limits = Limits(prompt_max=10)
    assert parse_request("short one", limits).prompt == "short one"
    with pytest.raises(RequestError, match="11 characters; this model accepts at most 10"):
        parse_request("eleven char", limits)


def test_size_and_seed_limits_come_from_the_schema() -> None:
    limits = Limits(seed_range=(0, 100), sizes=("2K",))
    with pytest.raises(RequestError, match="Use 2K"):
        parse_request("fox --size 4K", limits)
    with pytest.raises(RequestError, match="from 0 to 100"):
        parse_request("fox --seed 101", limits)


@pytest.mark.parametrize(
    ("raw", "readable"),
    [
        ("portrait of <@U123|alice>", "portrait of @alice"),
        ("portrait of <@U123>", "portrait of @U123"),
        ("poster for <#C1|general>", "poster for #general"),
        ("<!channel> party", "@channel party"),
        ("<!subteam^S1|@design> logo", "@design logo"),
        ("style of <https://example.com/a|this page>", "style of this page"),
        ("see <https://example.com/a>", "see https://example.com/a"),
        ("cats &amp; dogs &lt;3 &gt;_&lt;", "cats & dogs <3 >_<"),
    ],
)
def test_slack_escapes_become_readable(raw: str, readable: str) -> None:
    assert unescape_slack(raw) == readable


@pytest.mark.parametrize(
    "request_",
    [
        GenerationRequest(prompt="a lighthouse"),
        GenerationRequest(prompt="a fox", aspect_ratio="16:9", size="4K", seed=7, n=2, model="flux-2-dev"),
        GenerationRequest(prompt="a castle -- instead", fresh=True),
    ],
)
def test_request_text_parses_back_to_the_request(request_: GenerationRequest) -> None:
    assert parse_request(request_text(request_)) == request_


def test_usage_names_every_flag_that_takes_a_value() -> None:
    assert USAGE == "/imagine <prompt> [--ar 16:9] [--size 2K|4K] [--seed N] [--n 1-4] [--model MODEL_ID]"
