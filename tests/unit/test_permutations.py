"""Prompt permutations: expansion in order, the limit of 8, the edge cases the module documents, and a
set's quota refusal naming what would fit."""

from __future__ import annotations

import itertools
import math
from datetime import UTC, datetime

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bot.domain.permutations import (
    MAX_COMBINATIONS,
    PermutationError,
    QueueRoomError,
    expand,
    quota_refusal,
    unescape,
)
from bot.domain.quotas import QuotaPolicy, Usage
from bot.domain.requests import parse_request
from bot.views.permutations import set_status

NOON_UTC = datetime(2026, 3, 2, 12, 0, tzinfo=UTC).timestamp()


def texts(source: str) -> list[str]:
    expansion = expand(source)
    assert expansion is not None
    return [variant.text for variant in expansion.variants]


def test_groups_expand_to_their_cartesian_product_first_group_slowest() -> None:
    expansion = expand("a {red|blue} fox in {snow|rain} --ar 16:9")
    assert expansion is not None
    assert [v.text for v in expansion.variants] == [
        "a red fox in snow --ar 16:9",
        "a red fox in rain --ar 16:9",
        "a blue fox in snow --ar 16:9",
        "a blue fox in rain --ar 16:9",
    ]
    assert [v.label for v in expansion.variants] == [
        "1 · red, snow",
        "2 · red, rain",
        "3 · blue, snow",
        "4 · blue, rain",
    ]
    assert {parse_request(v.text).aspect_ratio for v in expansion.variants} == {"16:9"}


def test_more_than_eight_combinations_are_refused_naming_the_count() -> None:
    with pytest.raises(PermutationError) as refused:
        expand("{a|b|c} {d|e|f|g} fox")
    assert "makes 12 combinations (3 × 4)" in str(refused.value)
    assert "at most 8" in str(refused.value)
    assert len(texts("{a|b} {c|d} {e|f} fox")) == MAX_COMBINATIONS


def test_a_huge_product_is_counted_not_built() -> None:
    with pytest.raises(PermutationError, match="makes 1073741824 combinations"):
        expand(" ".join(["{a|b}"] * 30))


def test_braces_without_a_bar_are_plain_text() -> None:
    assert expand("a {red} fox") is None
    assert expand('poster {"style": {"tone": "warm"}}') is None
    assert expand("cats | dogs") is None
    assert expand("a } stray brace") is None


def test_an_empty_option_means_without_it_and_is_labelled() -> None:
    expansion = expand("a {big|} fox")
    assert expansion is not None
    assert [parse_request(v.text).prompt for v in expansion.variants] == ["a big fox", "a fox"]
    assert expansion.variants[1].label == "2 · (none)"


def test_options_are_trimmed() -> None:
    assert texts("a { red | blue } fox") == ["a red fox", "a blue fox"]


def test_a_group_of_empty_options_is_refused() -> None:
    with pytest.raises(PermutationError, match="has no options"):
        expand("a {|} fox")


@pytest.mark.parametrize("source", ["a {red|{blue|green}} fox", "a {x {red|blue}} fox", "{a|b {c}}"])
def test_nested_braces_are_refused(source: str) -> None:
    with pytest.raises(PermutationError, match="Braces inside braces"):
        expand(source)


@pytest.mark.parametrize("source", ["a {red|blue fox", "a red|blue} fox", "{a|b} and {c"])
def test_unbalanced_braces_with_a_bar_are_refused(source: str) -> None:
    with pytest.raises(PermutationError, match=r"not closed or not opened.*\\\{"):
        expand(source)


def test_escaped_braces_and_bars_are_literal() -> None:
    assert expand(r"a \{red|blue\} fox") is None
    assert unescape(r"a \{red\|blue\} fox") == "a {red|blue} fox"
    assert texts(r"a {red\|pink|blue} fox \{x\}") == ["a red|pink fox {x}", "a blue fox {x}"]


def test_groups_inside_flags_vary_the_flag() -> None:
    requests = [parse_request(text) for text in texts("a fox --ar {1:1|16:9} --n 2")]
    assert [(r.aspect_ratio, r.n) for r in requests] == [("1:1", 2), ("16:9", 2)]


def test_a_variant_keeps_the_lines_of_the_prompt() -> None:
    assert texts("a {red|blue} fox\nin snow") == ["a red fox\nin snow", "a blue fox\nin snow"]


OPTION = st.sampled_from(["red", "blue", "", "x y", "4K", r"\{literal\}"])
GROUP = st.lists(OPTION, min_size=2, max_size=4).filter(any)


@settings(max_examples=200, deadline=None)
@given(st.lists(GROUP, min_size=1, max_size=4), st.lists(st.sampled_from(["a", "fox", "--n 2"]), max_size=3))
def test_the_count_is_the_product_of_the_option_counts(groups: list[list[str]], words: list[str]) -> None:
    source = " ".join(["fox", *("{" + "|".join(options) + "}" for options in groups), *words])
    expected = math.prod(len(options) for options in groups)
    if expected > MAX_COMBINATIONS:
        with pytest.raises(PermutationError, match=f"makes {expected} combinations"):
            expand(source)
        return
    expansion = expand(source)
    assert expansion is not None
    assert [v.number for v in expansion.variants] == list(range(1, expected + 1))
    expected_choices = itertools.product(*([unescape(option) for option in options] for options in groups))
    assert [v.choices for v in expansion.variants] == list(expected_choices)


def policy(per_user: int = 10, per_channel: int = 0, weight_4k: int = 2) -> QuotaPolicy:
    return QuotaPolicy(per_user=per_user, per_channel=per_channel, weight_4k=weight_4k, tz=UTC)


def test_a_set_that_fits_exactly_is_admitted_and_one_more_image_is_not() -> None:
    assert quota_refusal(policy(), Usage(user=2, channel=0), [2, 2, 2, 2], now=NOON_UTC) is None
    refusal = quota_refusal(policy(), Usage(user=3, channel=0), [2, 2, 2, 2], now=NOON_UTC)
    assert refusal is not None
    assert "These 4 combinations need 8 images" in refusal
    assert "you have 7 images left today; the first 3 would fit" in refusal
    assert "Nothing was queued; the quota resets at 00:00 UTC" in refusal


def test_a_set_refusal_at_zero_and_when_not_even_one_fits() -> None:
    used_up = quota_refusal(policy(), Usage(user=10, channel=0), [1, 1], now=NOON_UTC)
    assert used_up is not None
    assert "You have used your 10 images for today" in used_up
    channel = quota_refusal(policy(per_user=0, per_channel=5), Usage(0, 2), [4, 4], now=NOON_UTC)
    assert channel is not None
    assert "this channel has 3 images left today; not even the first" in channel
    assert quota_refusal(policy(per_user=0), Usage(99, 99), [4], now=NOON_UTC) is None


def test_the_queue_refusal_says_how_much_room_there_was() -> None:
    assert "These 8 combinations are 8 jobs, and your queue has room for 3 more" in str(QueueRoomError(3, 8))
    assert "has no room for more" in str(QueueRoomError(0, 2))


def test_the_4k_weight_is_named_only_when_the_set_has_4k_images() -> None:
    weighted = quota_refusal(policy(), Usage(user=5, channel=0), [2, 2, 2], now=NOON_UTC, has_4k=True)
    assert weighted is not None
    assert "These 3 combinations need 6 images (a 4K image counts as 2) but you have 5" in weighted
    assert "the first 2 would fit" in weighted
    plain = quota_refusal(policy(), Usage(user=5, channel=0), [2, 2, 2], now=NOON_UTC)
    assert plain is not None
    assert "counts as" not in plain


def test_the_set_status_escapes_user_text_and_stays_within_slacks_limits() -> None:
    template = "<!channel> & " * 300 + "{a|b}"
    message = set_status(template, ["1 · <!here>", "2 · b"], user_id="U1", images=2)
    sections = [block["text"]["text"] for block in message["blocks"] if block["type"] == "section"]
    assert all(len(text) <= 3000 for text in sections)
    assert "<!channel>" not in str(message)
    assert "<!here>" not in str(message)
    assert "&lt;!here&gt;" in sections[1]
