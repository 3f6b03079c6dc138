"""Every Block Kit payload Dreamboard sends: status, result card, help and errors.

Functions return `{"text": …, "blocks": […]}` dicts, ready to splat into chat calls.
User text is always escaped, so a prompt can never ping `@channel` or forge a link.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from bot.domain.controls import PAGE_SIZE, REACTIONS, Action, HistoryQuery, Target
from bot.domain.errors import CapReachedError
from bot.domain.kits import KitApplication, sent_prompt
from bot.domain.quotas import QuotaExceededError
from bot.domain.requests import (
    ASPECT_RATIOS,
    FLAGS,
    PROMPT_BOX_MAX,
    USAGE,
    PromptBoxes,
    request_text,
    split_prompt,
)
from bot.jobs import recipes
from bot.store.model import Job, JobImage

Message = dict[str, Any]
SECTION_LIMIT = 3000
HOME_BLOCK_LIMIT = 100
FILE_PROCESSING_GRACE = 30.0
"""Seconds after a job finished before its files go into `slack_file` image blocks: Slack refuses the
whole payload (`invalid_blocks`) while it is still processing a new file (slack.md §2.2)."""


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
    """Usage and examples for `/imagine help` and an empty `/imagine` (one section per topic, each well
    under Slack's 3000 characters)."""
    basics = (
        f"*Dreamboard* makes images with Seedream 4.5.\n`{USAGE}`\n\n"
        "*Examples*\n"
        "• `/imagine a red fox in fresh snow, golden hour`\n"
        "• `/imagine isometric city block at night --ar 16:9 --size 4K`\n"
        "• `/imagine watercolour lighthouse --seed 42 --n 4`\n"
        "• `/imagine a {red|blue} fox in {snow|rain}` runs every combination (at most 8) in one thread, "
        "then posts a contact sheet of them all\n\n"
        "*Flags*\n" + "".join(f"• `--{flag.name}` {flag.help}\n" for flag in FLAGS)
    )
    commands = (
        "*Your results*\n"
        "• `/imagine history [N] [words]` lists your recent results to replay; "
        "`/imagine history export` sends them all as a CSV by DM\n"
        "• `/imagine show <job id>` reposts a result with its buttons here; "
        "`/imagine seed <job id>` shows its recipe\n"
        "• `/imagine usage` shows your images and this channel's today against the daily quota, and your "
        "last 7 days; admins get the workspace report, with a 14-day chart in their DM\n"
        "• `/imagine -- <prompt>` is always a prompt, even one starting with `show`, `seed` or `history`\n\n"
        "*As a team*\n"
        '• `/imagine kit` shows this channel\'s kit; `/imagine kit set --ar 16:9 --size 2K --style "…"` '
        "sets its default flags and a style added to every prompt; `/imagine kit clear` removes it; "
        "react :pushpin: on an image to pin it as a reference (at most 3), remove it (or "
        "`/imagine kit unpin N`) to unpin\n"
        "• `/imagine top [today|week|all] [N]` posts this channel's most-voted results "
        "(vote with :+1:, or :one:–:four: on several images, or a tile's number on a contact sheet)\n"
        "• `/imagine vote 15m` opens a vote on this channel's latest thread "
        "(in a thread: `@Dreamboard vote 15m`); the winner is posted at the deadline"
    )
    iterating = (
        "Results arrive in a thread under the status message; every result records its seed. "
        "Reply in that thread to iterate, or react to a result:\n"
        + "\n".join(
            f"• {' '.join(f':{name}:' for name, act in REACTIONS.items() if act is action)} {what}"
            for action, what in _REACTION_HELP.items()
        )
    )
    return {"text": f"Usage: {USAGE}", "blocks": [_section(basics), _section(commands), _section(iterating)]}


def error_message(problem: str) -> Message:
    """A bad-input answer: what is wrong (escaped: it quotes the user's input), then the usage line."""
    return {
        "text": escape(problem),
        "blocks": [
            _section(f":warning: {escape(problem)}"),
            _context(f"Usage: `{USAGE}` · `/imagine help` for examples"),
        ],
    }


def notice(text: str) -> Message:
    """A plain one-line ephemeral notice."""
    return {"text": text, "blocks": [_section(text)]}


def not_in_channel(bot_user_id: str | None, *, archived: bool = False) -> Message:
    """The bot cannot post here: how to invite it, or (`archived`) that nobody can post here any more."""
    if archived:
        return notice(
            ":file_cabinet: This channel is archived, so I can't post here and nothing was started. "
            "Unarchive it, or ask me in another channel."
        )
    who = f"<@{bot_user_id}>" if bot_user_id else "@Dreamboard"
    return notice(f":wave: I'm not in this conversation yet. Invite me with `/invite {who}` and try again.")


def edit_not_opened(code: str) -> Message:
    """Slack refused to open the ✏️ Edit form (its trigger expired, or Slack was unavailable)."""
    return notice(
        f":warning: Slack did not open the edit form (`{escape(code)}`). Press ✏️ Edit again; if it keeps "
        "failing, 🌱 Recipe shows the settings to use with `/imagine`."
    )


def cap_reached(queued: int, prompt: str) -> Message:
    """The user has too many jobs waiting; echo the prompt so nothing is lost."""
    return notice(
        f":hourglass: You have {queued} jobs queued already. Try again when one has finished; "
        f"your prompt was:\n{_quote(prompt)}"
    )


def cap_refusal(exc: CapReachedError, prompt: str) -> Message:
    """Why a job was refused at admission (too many queued, or today's quota), echoing the prompt."""
    if isinstance(exc, QuotaExceededError):
        return notice(f"{exc.message} Your prompt was:\n{_quote(prompt)}")
    return cap_reached(exc.queued, prompt)


def quota_left(line: str) -> Message:
    """The user is past 80 % of today's images: how many are left (domain/quotas.py words it)."""
    return notice(f":bar_chart: {line}")


def _how_to_iterate(job: Job) -> str:
    """A thread is Dreamboard's only when its root is Dreamboard's status message; elsewhere only
    mentions are answered (bot/features/iterations.py)."""
    if job.thread_ts is None or job.thread_ts == job.status_ts:
        return "reply in this thread to iterate"
    return "mention @Dreamboard in this thread to iterate"


def status(
    job: Job, *, position: int | None = None, problem: str | None = None, generating: bool = False
) -> Message:
    """The thread root (or first reply) that tracks a job: queued, generating (also a job about to start,
    with `generating`), done or failed; once the images are posted it becomes the result card."""
    images = f"{job.n} images" if job.n > 1 else "1 image"
    if job.deleted_at is not None:
        headline = f":wastebasket: *Deleted* by <@{job.deleted_by}>"
    elif problem is not None:
        headline = f":x: *Failed* · {escape(problem)}"
    elif job.state == "uploaded":
        headline = f":white_check_mark: *Done* · {images} in the thread"
    elif job.state == "running" or generating:
        headline = f":art: *Generating…* · {images}"
    elif job.state == "cancelled":
        headline = ":no_entry_sign: *Cancelled*"
    else:
        headline = f":hourglass_flowing_sand: *Queued · position {position or 1}*"
    return {
        "text": f"{_clip(headline, 150)}: {escape(_clip(job.prompt, 200))}",
        "blocks": [
            _section(f"{headline}\n{_quote(job.prompt, 1500)}"),
            _context(f"<@{job.user_id}> · job `{job.id}` · {_how_to_iterate(job)}"),
        ],
    }


def failure_reply(job: Job, problem: str) -> Message:
    """The explanation posted into the thread when a job fails."""
    return {
        "text": f"Job {job.id} failed: {escape(problem)}",
        "blocks": [
            _section(f":x: <@{job.user_id}>, job `{job.id}` failed.\n{escape(problem)}"),
            _context("Reply in this thread with a prompt to try again."),
        ],
    }


ACTION_PREFIX = "dreamboard:"
EDIT_CALLBACK = "dreamboard:edit_submit"
_LABELS = {
    Action.REROLL: "🔁 Reroll",
    Action.VARY: "🔀 Vary",
    Action.UPSCALE: "⬆️ 4K",
    Action.EDIT: "✏️ Edit",
    Action.RECIPE: "🌱 Recipe",
    Action.FAVOURITE: "⭐ Favourite",
    Action.REPLAY: "▶️ Replay",
    Action.REPLAY_NEW_SEED: "🎲 Replay, new seed",
}
_REACTION_HELP = {
    Action.REROLL: "reroll (same prompt and references, new seed)",
    Action.VARY: "vary (this image as the reference)",
    Action.UPSCALE: "4K (this image, same seed)",
    Action.DM_RECIPE: "DM me the recipe",
    Action.CANCEL_OR_DELETE: "cancel, or delete the results (requester or admin)",
}


def _button(action: Action, target: Target, label: str | None = None) -> dict[str, Any]:
    return {
        "type": "button",
        "action_id": f"{ACTION_PREFIX}{action.value}:{target.value}",
        "text": {"type": "plain_text", "text": label or _LABELS[action], "emoji": True},
        "value": target.value,
    }


def result_actions(job: Job, images: Sequence[JobImage]) -> dict[str, Any]:
    """One actions block: job-wide buttons, plus Vary and 4K per image when there are several."""
    made = [image for image in images if image.file_id]
    first = Target(job.id, made[0].idx if made else 0)
    elements = [_button(Action.REROLL, first)]
    if len(made) > 1:
        for image in made:
            target = Target(job.id, image.idx)
            elements.append(_button(Action.VARY, target, f"🔀 Vary {image.idx + 1}"))
            elements.append(_button(Action.UPSCALE, target, f"⬆️ 4K {image.idx + 1}"))
    else:
        elements += [_button(Action.VARY, first), _button(Action.UPSCALE, first)]
    elements += [_button(Action.EDIT, first), _button(Action.RECIPE, first), _button(Action.FAVOURITE, first)]
    return {"type": "actions", "block_id": f"dreamboard-actions-{job.id}", "elements": elements}


def result_card(
    job: Job,
    images: Sequence[JobImage],
    *,
    parent: Job | None = None,
    with_images: bool = False,
    headline: bool = False,
) -> Message:
    """The result card: the recipe of what was made, with buttons (and the images, when reposted). With
    `headline` it is the job's status message rewritten in place: it first says the job is done."""
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
    blocks: list[dict[str, Any]] = []
    if headline:
        count = f"{len(made)} images" if len(made) != 1 else "1 image"
        blocks.append(_section(f":white_check_mark: *Done* · {count} in the thread"))
    blocks += [
        _section(f"*Prompt*\n{_quote(job.prompt)}"),
        {"type": "section", "fields": [{"type": "mrkdwn", "text": text} for text in fields]},
    ]
    if parent is not None:
        blocks.append(_context(f"↳ from job `{parent.id}` by <@{parent.user_id}>"))
    kit_line = _kit_line(job)
    if kit_line:
        blocks.append(_context(kit_line))
    failed = [image for image in images if image.error]
    notes = list(job.notes)
    left_out = job.params.get("left_out") or []
    if left_out:
        notes.append(f"Left out (over the 10-reference limit): {', '.join(left_out)}")
    notes += [f"Not used: {reason}" for reason in job.params.get("skipped") or []]
    if failed:
        notes.append(f"{len(failed)} of {len(images)} images failed: {failed[0].error or ''}")
    if notes:
        blocks.append(_context(*(f":information_source: {escape(note)}" for note in notes)))
    if with_images:
        blocks += [
            {"type": "image", "slack_file": {"id": image.file_id}, "alt_text": _clip(job.prompt, 2000)}
            for image in made
        ]
    blocks.append(result_actions(job, images))
    if headline:
        blocks.append(_context(f"<@{job.user_id}> · {_how_to_iterate(job)}"))
    return {"text": f"Result of job {job.id}: {escape(_clip(job.prompt, 200))}", "blocks": blocks}


def _kit_line(job: Job) -> str | None:
    """The card's line naming what the channel kit gave the job (None: no kit)."""
    kit = KitApplication.from_params(job.params)
    summary = kit.summary() if kit is not None else None
    return f":art: {escape(summary)}" if summary else None


def imagine_line(job: Job) -> str:
    """A `/imagine …` line that asks for the same thing again: what ▶️ Replay runs, less the references
    (a slash command cannot carry files; `recipe` says so next to the line). For a job a channel kit
    shaped, the line spells out the prompt Oxen received and says `--nokit`, so it means the same in any
    channel, whatever its kit is now."""
    request = recipes.replay(job, new_seed=False).request
    kit = KitApplication.from_params(job.params)
    if kit is not None and kit.applied:
        request = request.model_copy(update={"prompt": sent_prompt(job.prompt, job.params), "nokit": True})
    return f"/imagine {request_text(request)}"


def _references_note(count: int) -> str:
    return (
        f":warning: The line above cannot carry this job's {count} reference image"
        f"{'s' if count != 1 else ''}: pasted, it makes an image without them. To keep them, reply with "
        "a prompt in the job's thread, or press ▶️ Replay on it in `/imagine history` or App Home."
    )


def recipe(job: Job, images: Sequence[JobImage], *, parent: Job | None = None) -> Message:
    """Everything needed to make this again: prompt, seeds, parameters, model, lineage, a command line."""
    seeds = ", ".join(str(image.seed) for image in images) or str(job.seed)
    ratio = escape(job.aspect_ratio or "model default")
    references = len(job.params.get("references") or [])
    sent = sent_prompt(job.prompt, job.params)
    lines = [
        f"*Recipe of job `{job.id}`* by <@{job.user_id}>",
        f"*Prompt*\n{_quote(job.prompt, 2000)}",
        *(
            [f"*Prompt sent to Oxen* (with the channel kit's style)\n{_quote(sent, 2000)}"]
            if sent != job.prompt
            else []
        ),
        f"*Seeds:* `{seeds}` · *Size:* {job.size} · *Aspect ratio:* {ratio}"
        f" · *Model:* `{escape(job.model)}` · *References:* {references}",
    ]
    if parent is not None:
        lines.append(f"↳ from job `{parent.id}` by <@{parent.user_id}>")
    if job.notes:
        lines.append("\n".join(f":information_source: {escape(note)}" for note in job.notes))
    kit_line = _kit_line(job)
    if kit_line:
        lines.append(kit_line)
    command = escape(_clip(imagine_line(job), 2800))
    text = "\n".join(lines)
    blocks = [_section(text), _section(f"```{command}```")]
    if job.reference_sources:
        blocks.append(_context(_references_note(len(job.reference_sources))))
    return {"text": f"Recipe of job {job.id}", "blocks": blocks}


def replay_started(original: Job, job: Job, *, new_seed: bool) -> Message:
    """The presser's answer to ▶️ Replay / 🎲 Replay, new seed: which job runs, and where."""
    how = "with a new seed" if new_seed else f"with seed `{original.seed}`"
    return notice(
        f":arrow_forward: Replaying job `{original.id}` {how} as job `{job.id}`: "
        f"it runs in its original thread in <#{job.channel_id}>."
    )


def without_images(payload: Mapping[str, Any]) -> dict[str, Any]:
    """`payload` (a message or a view) with its image blocks and image accessories left out: the fallback
    when Slack refuses a `slack_file` it has not finished processing."""
    blocks = []
    for block in payload.get("blocks") or []:
        if block.get("type") == "image":
            continue
        if (block.get("accessory") or {}).get("type") == "image":
            block = {key: value for key, value in block.items() if key != "accessory"}
        blocks.append(block)
    return {**payload, "blocks": blocks}


def has_images(payload: Mapping[str, Any]) -> bool:
    """Whether `payload` shows any image (so `without_images` would change it)."""
    return bool(without_images(payload)["blocks"] != list(payload.get("blocks") or []))


def edit_modal(
    job: Job,
    target: Target,
    *,
    reference_count: int,
    sizes: Sequence[str],
    box: int = PROMPT_BOX_MAX,
    prompt: PromptBoxes | None = None,
) -> dict[str, Any]:
    """The ✏️ Edit modal, prefilled from the job; submitting it runs the edited recipe. The prompt
    fills as many boxes of at most `box` characters as it needs (`prompt`: how split_prompt cut it),
    so none of it is cut off."""
    prompt = prompt or split_prompt(job.prompt, box)

    def option(value: str) -> dict[str, Any]:
        return {"text": {"type": "plain_text", "text": value}, "value": value}

    ratios = [option(ratio) for ratio in ASPECT_RATIOS]
    size_options = [option(size) for size in sizes]
    ratio_element: dict[str, Any] = {"type": "static_select", "action_id": "value", "options": ratios}
    if job.aspect_ratio in ASPECT_RATIOS:
        ratio_element["initial_option"] = option(job.aspect_ratio or "")
    size_element: dict[str, Any] = {"type": "static_select", "action_id": "value", "options": size_options}
    if job.size in sizes:
        size_element["initial_option"] = option(job.size)
    return {
        "type": "modal",
        "callback_id": EDIT_CALLBACK,
        "private_metadata": target.value,
        "title": {"type": "plain_text", "text": "Edit and run"},
        "submit": {"type": "plain_text", "text": "Generate"},
        "close": {"type": "plain_text", "text": "Cancel"},
        "blocks": [
            *_prompt_inputs(prompt, box),
            {
                "type": "input",
                "block_id": "aspect_ratio",
                "optional": True,
                "label": {"type": "plain_text", "text": "Aspect ratio"},
                "element": ratio_element,
            },
            {
                "type": "input",
                "block_id": "size",
                "label": {"type": "plain_text", "text": "Size"},
                "element": size_element,
            },
            {
                "type": "input",
                "block_id": "seed",
                "optional": True,
                "label": {"type": "plain_text", "text": "Seed (empty: a new random seed)"},
                "element": {"type": "plain_text_input", "action_id": "value", "initial_value": str(job.seed)},
            },
            _context(f"Keeps the job's {reference_count} reference image(s). Job `{job.id}`."),
        ],
    }


def _prompt_inputs(prompt: PromptBoxes, box: int) -> list[dict[str, Any]]:
    """One multiline input per part of the prompt; a prompt longer than one box continues in the next
    (recipes.check_edit joins them back)."""
    count = len(prompt.parts)
    blocks: list[dict[str, Any]] = []
    for index, part in enumerate(prompt.parts):
        label = "Prompt" if count == 1 else f"Prompt ({index + 1} of {count})"
        block: dict[str, Any] = {
            "type": "input",
            "block_id": recipes.prompt_block_id(index),
            "label": {"type": "plain_text", "text": label},
            "element": {
                "type": "plain_text_input",
                "action_id": "value",
                "multiline": True,
                "max_length": box,
                "initial_value": part,
            },
        }
        if index:
            block["optional"] = True
        blocks.append(block)
    if count > 1:
        blocks.append(
            _context(
                f"The prompt is longer than one box holds ({box:,} characters), so it continues from box "
                "to box; they are joined in order when you press Generate."
            )
        )
    return blocks


def upload_comment(job: Job, count: int) -> str:
    """The initial comment of the upload message."""
    what = f"are your {count} images" if count > 1 else "is your image"
    return f"<@{job.user_id}> here {what} (job `{job.id}`)"


def _when(job: Job) -> str:
    stamp = int(job.created_at)
    fallback = datetime.fromtimestamp(stamp, UTC).strftime("%Y-%m-%d %H:%M UTC")
    return f"<!date^{stamp}^{{date_short_pretty}} {{time}}|{fallback}>"


def _summary(job: Job, permalink: Callable[[Job], str]) -> str:
    link = permalink(job)
    where = f" · <{link}|thread>" if link else ""
    ratio = escape(job.aspect_ratio or "default")
    return (
        f"*{escape(_clip(sent_prompt(job.prompt, job.params), 300))}*\n"
        f"`{job.seed}` · {job.size} · {ratio} · {_when(job)}{where} · job `{job.id}`"
    )


def files_ready(job: Job, ready_before: float) -> bool:
    """Whether Slack has had time to process the job's files: it finished at or before `ready_before`
    (Unix time; callers pass now minus FILE_PROCESSING_GRACE)."""
    return job.finished_at is not None and job.finished_at <= ready_before


def _thumbnail(job: Job, images: Sequence[JobImage], ready_before: float) -> dict[str, Any] | None:
    file_id = next((image.file_id for image in images if image.file_id), None)
    if file_id is None or job.deleted_at is not None or not files_ready(job, ready_before):
        return None
    return {"type": "image", "slack_file": {"id": file_id}, "alt_text": _clip(job.prompt, 2000)}


def _history_item(
    job: Job,
    images: Sequence[JobImage],
    permalink: Callable[[Job], str],
    *,
    thumbnail_ready_before: float | None,
    block_prefix: str = "history",
) -> list[dict[str, Any]]:
    section = _section(_summary(job, permalink))
    if thumbnail_ready_before is not None:
        image = _thumbnail(job, images, thumbnail_ready_before)
        if image is not None:
            section["accessory"] = image
    target = Target(job.id)
    buttons = [_button(Action.REPLAY, target), _button(Action.REPLAY_NEW_SEED, target)]
    return [section, {"type": "actions", "block_id": f"{block_prefix}-{job.id}", "elements": buttons}]


def history_page(
    jobs: Sequence[Job],
    images: Mapping[str, Sequence[JobImage]],
    query: HistoryQuery,
    *,
    has_more: bool,
    permalink: Callable[[Job], str],
    files_ready_before: float,
) -> Message:
    """One page of `/imagine history` (only the caller sees it); thumbnails only of jobs that finished
    by `files_ready_before`."""
    filtered = f" matching “{escape(query.text)}”" if query.text else ""
    if not jobs:
        return notice(f"No generations{filtered} yet. Start one with `/imagine <prompt>`.")
    first = query.offset + 1
    blocks: list[dict[str, Any]] = [
        _section(f"*Your generations{filtered}* · {first}–{query.offset + len(jobs)}")
    ]
    for job in jobs:
        blocks += _history_item(
            job, images.get(job.id, []), permalink, thumbnail_ready_before=files_ready_before
        )
    paging = []
    if query.offset > 0:
        previous = HistoryQuery(query.total, query.text, max(query.offset - PAGE_SIZE, 0))
        paging.append(_page_button("← Previous", previous))
    if has_more:
        paging.append(_page_button("Next →", HistoryQuery(query.total, query.text, query.offset + PAGE_SIZE)))
    if paging:
        blocks.append({"type": "actions", "block_id": "history-paging", "elements": paging})
    return {"text": f"Your generations{filtered}", "blocks": blocks}


def _page_button(label: str, query: HistoryQuery) -> dict[str, Any]:
    return {
        "type": "button",
        "action_id": f"{ACTION_PREFIX}{Action.HISTORY_PAGE.value}:{query.offset}",
        "text": {"type": "plain_text", "text": label},
        "value": query.value,
    }


def home(
    recent: Sequence[Job],
    favourites: Sequence[Job],
    images: Mapping[str, Sequence[JobImage]],
    *,
    today: int,
    permalink: Callable[[Job], str],
    files_ready_before: float,
) -> dict[str, Any]:
    """The App Home tab: images made today, favourites and the last generations as a gallery.

    A job can be both a favourite and recent: its blocks get distinct block_ids per section, as Slack
    requires unique block_ids in a view. Images only of jobs that finished by `files_ready_before`;
    recent jobs that would take the view past 100 blocks are left out whole."""
    blocks: list[dict[str, Any]] = [
        {"type": "header", "text": {"type": "plain_text", "text": "Your Dreamboard"}},
        _context(f"Today: {today} image{'s' if today != 1 else ''} · `/imagine help` for commands"),
    ]
    if favourites:
        blocks.append({"type": "header", "text": {"type": "plain_text", "text": "⭐ Favourites"}})
        for job in favourites:
            blocks += _history_item(
                job,
                images.get(job.id, []),
                permalink,
                thumbnail_ready_before=files_ready_before,
                block_prefix="favourite",
            )
    blocks.append({"type": "header", "text": {"type": "plain_text", "text": "Recent"}})
    if not recent:
        blocks.append(_section("Nothing yet. Try `/imagine a lighthouse in a storm` in any channel."))
    for job in recent:
        item = _history_item(job, images.get(job.id, []), permalink, thumbnail_ready_before=None)
        image = _thumbnail(job, images.get(job.id, []), files_ready_before)
        if image is not None:
            item.insert(0, {**image, "title": {"type": "plain_text", "text": _clip(job.prompt, 200)}})
        if len(blocks) + len(item) > HOME_BLOCK_LIMIT:
            break
        blocks += item
    return {"type": "home", "blocks": blocks}
