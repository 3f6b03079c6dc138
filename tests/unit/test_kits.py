"""Channel kits, pure: reading `kit set`, applying a kit to a request, and what a job records of it."""

from __future__ import annotations

import pytest

from bot.domain.commands import KitClear, KitSet, KitShow, KitUnpin, Prompt, UsageError, parse_command
from bot.domain.kits import (
    STYLE_MAX,
    Kit,
    KitApplication,
    KitChange,
    Pin,
    apply_kit,
    join_style,
    parse_kit_set,
    reapply,
    sent_prompt,
    sent_references,
)
from bot.domain.requests import GenerationRequest, Limits, RequestError, parse_request

FILE = {"kind": "file", "name": "logo.png", "file_id": "F1", "key": "k1", "mimetype": "image/png"}
RESULT = {"kind": "result", "name": "image 1 of job abc", "file_id": "F2", "job_id": "abc", "idx": 0}
BRAND = Kit("16:9", "4K", "flat vector, brand palette", (Pin("1.1", FILE, 1.0), Pin("1.2", RESULT, 2.0)))


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            '--ar 16:9 --size 2K --style "flat vector, brand palette"',
            KitChange("16:9", "2K", "flat vector, brand palette"),
        ),
        (
            "--style “flat vector, brand palette” —ar 4x3",
            KitChange("4:3", None, "flat vector, brand palette"),
        ),
        ("--style flat   vector --size 4k", KitChange(None, "4K", "flat vector")),
        ("--aspect 9:16", KitChange("9:16")),
        ("--style none --ar none", KitChange(cleared=frozenset({"style", "aspect_ratio"}))),
        ('--style ""', KitChange(cleared=frozenset({"style"}))),
        ("--style a &lt;b&gt; &amp; c", KitChange(style="a <b> & c")),
    ],
)
def test_kit_set_reads_flags_like_requests_and_a_quoted_style(text: str, expected: KitChange) -> None:
    assert parse_kit_set(text) == expected


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("--ar 5:4", "`--ar 5:4` is not supported"),
        ("--size 8K", "`--size 8K` is not supported"),
        ("--seed 4", "`--seed` is not part of a kit"),
        ("--ar 16:9 --ar 1:1", "given twice"),
        ("--ar", "needs a value"),
        ("--style", "needs a value"),
        ("flat vector", "is not a kit flag"),
        ("--style " + "x" * (STYLE_MAX + 1), f"at most {STYLE_MAX}"),
    ],
)
def test_bad_kit_input_is_explained(text: str, fragment: str) -> None:
    with pytest.raises(RequestError) as caught:
        parse_kit_set(text)
    assert fragment in str(caught.value)


def test_a_change_merges_into_the_kit_and_keeps_its_pins() -> None:
    changed = KitChange(size="2K", cleared=frozenset({"style"})).applied_to(BRAND)
    assert (changed.aspect_ratio, changed.size, changed.style, changed.pins) == (
        "16:9",
        "2K",
        None,
        BRAND.pins,
    )


def test_the_kit_fills_only_what_the_request_left_unset() -> None:
    request, applied = apply_kit(parse_request("a fox --size 2K"), BRAND, own_references=0, limits=Limits())
    assert (request.prompt, request.aspect_ratio, request.size) == ("a fox", "16:9", "2K")
    assert applied == KitApplication(style=BRAND.style, aspect_ratio="16:9", pins=(FILE, RESULT))
    assert applied.summary() == "Channel kit: style, --ar 16:9, 2 pinned references"


def test_nokit_leaves_the_request_alone_and_is_recorded() -> None:
    request = parse_request("a fox --nokit")
    kept, applied = apply_kit(request, BRAND, own_references=0, limits=Limits())
    assert kept == request
    assert applied.declined
    assert not applied.applied
    assert applied.summary() is None
    assert KitApplication.from_params({"kit": applied.to_params()}) == applied


def test_pins_fit_after_the_jobs_own_references_within_the_models_limit() -> None:
    _, applied = apply_kit(parse_request("a fox"), BRAND, own_references=9, limits=Limits())
    assert (applied.pins, applied.left_out) == ((FILE,), ("image 1 of job abc",))
    assert "1 pinned reference (left out over the reference limit: image 1 of job abc)" in str(
        applied.summary()
    )
    _, none_fit = apply_kit(parse_request("a fox"), BRAND, own_references=1, limits=Limits(max_references=1))
    assert (none_fit.pins, none_fit.left_out) == ((), ("logo.png", "image 1 of job abc"))


def test_a_style_that_would_overflow_the_prompt_is_left_out_and_said() -> None:
    limits = Limits(prompt_max=20)
    _, applied = apply_kit(parse_request("a small red fox here"), BRAND, own_references=0, limits=limits)
    assert applied.style is None
    assert applied.style_left_out
    assert "its style was left out" in str(applied.summary())


def test_a_size_the_model_does_not_offer_is_not_applied() -> None:
    request, applied = apply_kit(
        parse_request("a fox"), BRAND, own_references=0, limits=Limits(sizes=("2K",))
    )
    assert request.size is None
    assert applied.size is None


def test_the_prompt_and_references_oxen_receives_come_from_the_record() -> None:
    params = {"references": [RESULT], "kit": KitApplication(style="flat vector", pins=(FILE,)).to_params()}
    assert sent_prompt("a fox", params) == "a fox, flat vector"
    assert sent_prompt("A fox.", params) == "A fox. flat vector"
    assert sent_prompt("a fox", {}) == "a fox"
    assert sent_references(params) == [RESULT, FILE]
    assert join_style("a fox  ", "x") == "a fox, x"


def test_a_repeat_reuses_the_recorded_kit_refit_to_its_own_references() -> None:
    recorded = KitApplication(style="flat", aspect_ratio="16:9", size="4K", pins=(FILE, RESULT))
    vary = GenerationRequest(prompt="a fox", aspect_ratio="match_input_image", size="4K")
    again = reapply(vary, recorded, own_references=9, limits=Limits())
    assert again == KitApplication(style="flat", size="4K", pins=(FILE,), left_out=("image 1 of job abc",))


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("kit", KitShow()),
        ("KIT clear", KitClear()),
        ('kit set --ar 16:9 --style "flat  vector"', KitSet('--ar 16:9 --style "flat  vector"')),
        ("kit set —size 4K", KitSet("—size 4K")),
        (
            "kit set",
            UsageError(
                'Say what the kit sets, like `/imagine kit set --ar 16:9 --size 2K --style "flat vector"`.'
            ),
        ),
        ("kit unpin 3", KitUnpin(3)),
        ("kit unpin 4", Prompt("kit unpin 4")),
        ("kit of tools", Prompt("kit of tools")),
        ("kit set the table on fire", Prompt("kit set the table on fire")),
        ("kit clear skies", Prompt("kit clear skies")),
    ],
)
def test_kit_subcommands_only_on_their_exact_shapes(text: str, expected: object) -> None:
    assert parse_command(text) == expected
