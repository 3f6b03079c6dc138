"""Block Kit payloads: escaping, limits and content."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest

from bot.domain.requests import FLAGS, parse_request
from bot.jobs import recipes
from bot.store.model import ImageState, Job, JobImage, JobState
from bot.views import blocks as views


def make_job(**changes: object) -> Job:
    job = Job(
        id="abc123",
        team_id="T1",
        channel_id="C1",
        thread_ts="1.1",
        status_ts="1.1",
        card_ts=None,
        user_id="U1",
        prompt="a <fox> & @channel <!channel>",
        model="bytedance-seedream-4-5",
        size="2K",
        aspect_ratio="16:9",
        seed=42,
        seed_given=True,
        n=2,
        params={},
        notes=[],
        state=JobState.UPLOADED,
        error=None,
        parent_id=None,
        created_at=0.0,
        started_at=None,
        finished_at=None,
    )
    return replace(job, **changes)  # type: ignore[arg-type]


def image(idx: int, *, file_id: str | None = "F1", error: str | None = None) -> JobImage:
    state = ImageState.FAILED if error else ImageState.SUCCEEDED
    return JobImage("abc123", idx, 42 + idx, state, f"g{idx}", error, file_id)


def all_text(message: views.Message) -> str:
    return json.dumps(message, ensure_ascii=False)


def test_escape() -> None:
    assert views.escape("<!channel> & <@U1>") == "&lt;!channel&gt; &amp; &lt;@U1&gt;"


def test_result_card_has_the_recipe_and_escapes_the_prompt() -> None:
    card = views.result_card(make_job(), [image(0), image(1, file_id="F2")])
    text = all_text(card)
    assert "<!channel>" not in text
    assert "&lt;!channel&gt;" in text
    for fragment in ("`42, 43`", "2K", "16:9", "bytedance-seedream-4-5", "`abc123`", "<@U1>"):
        assert fragment in text


def test_result_card_shows_notes_and_partial_failures() -> None:
    job = make_job(notes=["This model version does not take a seed"])
    text = all_text(views.result_card(job, [image(0), image(1, file_id=None, error="blocked")]))
    assert "does not take a seed" in text
    assert "1 of 2 images failed: blocked" in text


def test_long_prompts_stay_within_block_limits() -> None:
    job = make_job(prompt="x" * 10_000)
    for message in (
        views.result_card(job, [image(0)]),
        views.status(job, position=3),
        views.cap_reached(3, job.prompt),
    ):
        for block in message["blocks"]:
            if block["type"] == "section" and "text" in block:
                assert len(block["text"]["text"]) <= 3000


def test_status_follows_the_job_state() -> None:
    assert "Queued · position 3" in all_text(views.status(make_job(state=JobState.QUEUED), position=3))
    assert "Generating" in all_text(views.status(make_job(state=JobState.RUNNING)))
    assert "Done" in all_text(views.status(make_job()))
    assert "Failed" in all_text(views.status(make_job(state=JobState.FAILED), problem="boom"))


def test_errors_carry_the_usage_line() -> None:
    assert "/imagine &lt;prompt&gt;" not in all_text(views.error_message("bad"))
    assert "Usage: `/imagine <prompt>" in all_text(views.error_message("bad"))
    assert "--ar" in views.help_message()["blocks"][0]["text"]["text"]


def test_not_in_channel_names_the_invite_command() -> None:
    assert "/invite <@U0BOT>" in views.not_in_channel("U0BOT")["text"]


def test_help_lists_every_flag() -> None:
    text = views.help_message()["blocks"][0]["text"]["text"]
    assert all(f"`--{flag.name}` {flag.help}" in text for flag in FLAGS)
    assert "match_input_image" in text


def test_help_lists_every_subcommand_and_the_team_features() -> None:
    text = "\n".join(block["text"]["text"] for block in views.help_message()["blocks"])
    for shown in (
        "/imagine history [N] [words]",
        "/imagine history export",
        "/imagine show <job id>",
        "/imagine seed <job id>",
        "/imagine usage",
        "/imagine kit`",
        "/imagine kit set --ar 16:9",
        "/imagine kit clear",
        "/imagine kit unpin N",
        ":pushpin:",
        "--nokit",
        "/imagine top [today|week|all] [N]",
        "/imagine vote 15m",
        "@Dreamboard vote 15m",
        "{red|blue}",
        "/imagine -- <prompt>",
    ):
        assert shown in text, shown
    assert all(len(block["text"]["text"]) < 3000 for block in views.help_message()["blocks"])


@pytest.mark.parametrize(
    "job",
    [
        make_job(),
        make_job(prompt="a fox", aspect_ratio=None, size="4K", seed=0, n=1),
        make_job(aspect_ratio="match_input_image", seed=2_147_483_644, n=4, model="flux-2-dev"),
        make_job(prompt="before -- after, well--known, — and --2 stars", n=3),
        make_job(prompt="a poster\ntitle: SUMMER\nsubtitle: 2026", aspect_ratio="3:4"),
    ],
)
def test_the_recipe_line_parses_back_to_a_replay(job: Job) -> None:
    line = views.imagine_line(job)
    # A line pasted into Slack arrives with &, < and > escaped.
    assert (
        parse_request(views.escape(line.removeprefix("/imagine ")))
        == recipes.replay(job, new_seed=False).request
    )
    assert views.recipe(job, [])["blocks"][-1]["text"]["text"] == f"```{views.escape(line)}```"
