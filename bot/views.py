"""Every Block Kit payload Dreamboard sends: status, result card, help and errors.

Functions return `{"text": …, "blocks": […]}` dicts, ready to splat into chat calls.
User text is always escaped, so a prompt can never ping `@channel` or forge a link.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from bot.requests import USAGE
from bot.store import Job, JobImage

Message = dict[str, Any]
SECTION_LIMIT = 3000


def escape(text: str) -> str:
    """Escape `&`, `<` and `>` so Slack shows user text literally."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _quote(prompt: str, limit: int = 2500) -> str:
    return "> " + escape(_clip(prompt, limit)).replace("\n", "\n> ")


def _section(text: str) -> dict[str, Any]:
    return {"type": "section", "text": {"type": "mrkdwn", "text": _clip(text, SECTION_LIMIT)}}


def _context(*parts: str) -> dict[str, Any]:
    return {"type": "context", "elements": [{"type": "mrkdwn", "text": _clip(p, 2000)} for p in parts[:10]]}


def help_message() -> Message:
    """Usage and examples for `/imagine help` and an empty `/imagine`."""
    text = (
        f"*Dreamboard* makes images with Seedream 4.5.\n`{USAGE}`\n\n"
        "*Examples*\n"
        "• `/imagine a red fox in fresh snow, golden hour`\n"
        "• `/imagine isometric city block at night --ar 16:9 --size 4K`\n"
        "• `/imagine watercolour lighthouse --seed 42 --n 4`\n\n"
        "*Flags*\n"
        "• `--ar` aspect ratio: 1:1, 16:9, 9:16, 4:3, 3:4, 3:2, 2:3, match_input_image\n"
        "• `--size` 2K or 4K · `--seed` a whole number · `--n` 1 to 4 images (seeds N, N+1, …)\n"
        "• `--model` another Oxen image model id\n\n"
        "Results arrive in a thread under the status message; every result records its seed."
    )
    return {"text": f"Usage: {USAGE}", "blocks": [_section(text)]}


def error_message(problem: str) -> Message:
    """A bad-input answer: what is wrong, then the usage line."""
    return {
        "text": problem,
        "blocks": [
            _section(f":warning: {problem}"),
            _context(f"Usage: `{USAGE}` · `/imagine help` for examples"),
        ],
    }


def notice(text: str) -> Message:
    """A plain one-line ephemeral notice."""
    return {"text": text, "blocks": [_section(text)]}


def not_in_channel(bot_user_id: str | None) -> Message:
    """The bot cannot post here: tell the user how to invite it."""
    who = f"<@{bot_user_id}>" if bot_user_id else "@Dreamboard"
    return notice(f":wave: I'm not in this conversation yet. Invite me with `/invite {who}` and try again.")


def cap_reached(queued: int, prompt: str) -> Message:
    """The user has too many jobs waiting; echo the prompt so nothing is lost."""
    return notice(
        f":hourglass: You have {queued} jobs queued already. Try again when one has finished; "
        f"your prompt was:\n{_quote(prompt)}"
    )


def status(job: Job, *, position: int | None = None, problem: str | None = None) -> Message:
    """The thread root (or first reply) that tracks a job: queued, generating, done or failed."""
    images = f"{job.n} images" if job.n > 1 else "1 image"
    if problem is not None:
        headline = f":x: *Failed* · {escape(problem)}"
    elif job.state == "uploaded":
        headline = f":white_check_mark: *Done* · {images} in the thread"
    elif job.state == "running":
        headline = f":art: *Generating…* · {images}"
    elif job.state == "cancelled":
        headline = ":no_entry_sign: *Cancelled*"
    else:
        headline = f":hourglass_flowing_sand: *Queued · position {position or 1}*"
    return {
        "text": f"{_clip(headline, 150)}: {escape(_clip(job.prompt, 200))}",
        "blocks": [
            _section(f"{headline}\n{_quote(job.prompt, 1500)}"),
            _context(f"<@{job.user_id}> · job `{job.id}` · reply in this thread to iterate"),
        ],
    }


def failure_reply(job: Job, problem: str) -> Message:
    """The explanation posted into the thread when a job fails."""
    return {
        "text": f"Job {job.id} failed: {escape(problem)}",
        "blocks": [
            _section(f":x: <@{job.user_id}>, job `{job.id}` failed.\n{escape(problem)}"),
            _context("Nothing was charged for images that were not produced. Edit the prompt and try again."),
        ],
    }


def result_card(job: Job, images: Sequence[JobImage], *, parent: Job | None = None) -> Message:
    """The result card posted after the upload: the recipe of what was made."""
    made = [image for image in images if image.file_id]
    seeds = ", ".join(str(image.seed) for image in made) or str(job.seed)
    seed_label = "Seeds" if len(made) > 1 else "Seed"
    fields = [
        f"*{seed_label}:* `{seeds}`",
        f"*Size:* {job.size}",
        f"*Aspect ratio:* {escape(job.aspect_ratio or 'model default')}",
        f"*Model:* `{escape(job.model)}`",
        f"*Job:* `{job.id}`",
        f"*By:* <@{job.user_id}>",
    ]
    references = job.params.get("references") or []
    if references:
        fields.append(f"*References:* {len(references)}")
    blocks: list[dict[str, Any]] = [
        _section(f"*Prompt*\n{_quote(job.prompt)}"),
        {"type": "section", "fields": [{"type": "mrkdwn", "text": text} for text in fields]},
    ]
    if parent is not None:
        blocks.append(_context(f"↳ from job `{parent.id}` by <@{parent.user_id}>"))
    failed = [image for image in images if image.error]
    notes = list(job.notes)
    left_out = job.params.get("left_out") or []
    if left_out:
        notes.append(f"Left out (over the 10-reference limit): {', '.join(left_out)}")
    notes += [f"Not used: {reason}" for reason in job.params.get("skipped") or []]
    if failed:
        notes.append(f"{len(failed)} of {len(images)} images failed: {escape(failed[0].error or '')}")
    if notes:
        blocks.append(_context(*(f":information_source: {escape(note)}" for note in notes)))
    return {"text": f"Result of job {job.id}: {escape(_clip(job.prompt, 200))}", "blocks": blocks}


def upload_comment(job: Job, count: int) -> str:
    """The initial comment of the upload message."""
    what = f"are your {count} images" if count > 1 else "is your image"
    return f"<@{job.user_id}> here {what} (job `{job.id}`)"
