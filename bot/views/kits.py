"""Block Kit payloads of channel kits: `/imagine kit`, the answers to changing it, and pin notices.
The style is user text, so it is escaped wherever it is shown."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from bot.domain.kits import MAX_PINS, Kit, Pin
from bot.views.blocks import Message, escape, notice

KIT_USAGE = '/imagine kit set [--ar 16:9] [--size 2K|4K] [--style "flat vector, brand palette"]'
PIN_REACTION = "pushpin"
"""The reaction that pins an image message to the channel's kit."""


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def who_may_change(admins: frozenset[str]) -> str:
    """Who may change a channel's kit, in words."""
    if not admins:
        return "anyone in this channel"
    return "only " + ", ".join(f"<@{user}>" for user in sorted(admins)) + " (`KIT_ADMINS`)"


def _flags(kit: Kit) -> str:
    flags = [f"--ar {kit.aspect_ratio}"] if kit.aspect_ratio else []
    flags += [f"--size {kit.size}"] if kit.size else []
    return " ".join(f"`{flag}`" for flag in flags) or "none"


def _pin_block(number: int, pin: Pin, *, ready_before: float) -> dict[str, Any]:
    section: dict[str, Any] = {
        "type": "section",
        "text": {"type": "mrkdwn", "text": f"{number}. {escape(_clip(pin.name, 300))}"},
    }
    file_id = pin.source.get("file_id")
    if file_id and pin.ready_at <= ready_before:
        section["accessory"] = {
            "type": "image",
            "slack_file": {"id": str(file_id)},
            "alt_text": _clip(pin.name, 2000),
        }
    return section


def kit_message(kit: Kit, *, admins: frozenset[str], ready_before: float) -> Message:
    """`/imagine kit`: flags, style, pinned references with thumbnails (only of files Slack has had time
    to process, `ready_before` in Unix time), and who may change it."""
    style = f"\n> {escape(_clip(kit.style, 2000))}" if kit.style else " none"
    lines = [
        "*This channel's kit*" if not kit.empty else "*This channel has no kit yet*",
        f"*Default flags:* {_flags(kit)} (where a prompt sets none)",
        f"*Style, added to every prompt:*{style}",
        f"*Pinned references:* {len(kit.pins)} of {MAX_PINS}",
    ]
    blocks: list[dict[str, Any]] = [{"type": "section", "text": {"type": "mrkdwn", "text": "\n".join(lines)}}]
    blocks += [_pin_block(number, pin, ready_before=ready_before) for number, pin in enumerate(kit.pins, 1)]
    changed = f" · last changed by <@{kit.updated_by}>" if kit.updated_by else ""
    blocks.append(
        {
            "type": "context",
            "elements": [
                {
                    "type": "mrkdwn",
                    "text": f"Who may change it: {who_may_change(admins)}{changed}. `{KIT_USAGE}` · "
                    "`/imagine kit clear` · react :pushpin: on an image to pin it, remove the reaction (or "
                    "`/imagine kit unpin N`) to unpin · `--nokit` on a prompt leaves the kit out",
                }
            ],
        }
    )
    return {"text": "This channel's kit", "blocks": blocks}


def kit_error(problem: str) -> Message:
    """Bad `kit set` input: what is wrong (escaped: it quotes the input) and the usage."""
    return notice(f":warning: {escape(problem)}\nUsage: `{KIT_USAGE}`")


def kit_changed(kit: Kit, *, cleared: bool = False) -> Message:
    """The answer to `kit set` or `kit clear` (only the person who changed it sees it)."""
    if cleared:
        return notice(
            ":wastebasket: This channel's kit is cleared: no default flags, style or pinned references."
        )
    style = f" · style: “{escape(_clip(kit.style, 500))}”" if kit.style else ""
    return notice(
        f":art: This channel's kit is set: flags {_flags(kit)}{style}. Every new prompt here uses it."
    )


def not_allowed(admins: frozenset[str]) -> Message:
    """Someone outside KIT_ADMINS tried to change the kit."""
    return notice(
        f":lock: This channel's kit can be changed by {who_may_change(admins)}; nothing was changed."
    )


def pinned(name: str, count: int, *, before: bool = False) -> Message:
    """A reference was pinned (`before`: someone else had pinned it already)."""
    if before:
        return notice(
            f":pushpin: {escape(name)} was already pinned to this channel's kit ({count} of {MAX_PINS}); "
            "your :pushpin: holds it too."
        )
    return notice(
        f":pushpin: Pinned {escape(name)} to this channel's kit ({count} of {MAX_PINS}): every new prompt "
        "here sends it as a reference. Remove your :pushpin: to unpin it."
    )


def unpinned(name: str, *, held: bool = False) -> Message:
    """A reference was unpinned, or (`held`) stays pinned by someone else's :pushpin:."""
    if held:
        return notice(
            f":pushpin: {escape(name)} stays pinned to this channel's kit: someone else's :pushpin: on it "
            "still holds it."
        )
    return notice(f":pushpin: Unpinned {escape(name)} from this channel's kit.")


def no_such_pin(number: int, count: int) -> Message:
    """`kit unpin N` past the pins there are."""
    return notice(
        f":pushpin: This channel's kit has {count} pinned reference{'s' if count != 1 else ''}, so there is "
        f"no number {number} to unpin. `/imagine kit` lists them."
    )


def pins_full(pins: Iterable[Pin]) -> Message:
    """A pin over the limit: the limit, what holds the slots, and how to free one."""
    names = ", ".join(escape(_clip(pin.name, 200)) for pin in pins)
    return notice(
        f":pushpin: This channel's kit already has {MAX_PINS} pinned references, the most it holds "
        f"({names}), so this image was not pinned. To free a slot, remove :pushpin: from one of those "
        "messages (or run `/imagine kit unpin N`, numbered as `/imagine kit` lists them), then add :pushpin: "
        "here again."
    )


def not_pinnable(reason: str) -> Message:
    """Why a message could not be pinned (`reason` is already safe to show)."""
    return notice(f":pushpin: {reason}")
