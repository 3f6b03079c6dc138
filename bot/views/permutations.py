"""Block Kit and text for permutation sets: the set's status message (its thread root), the contact
sheet's comment, and the answers about a set. User text is escaped."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

from bot.views.blocks import SECTION_LIMIT, Message, escape, notice
from bot.views.votes import sheet_numbers

SET_LIST_LIMIT = 2500
"""How much of the variants list the status message shows (a section holds 3000 characters)."""


def _section(text: str) -> dict[str, Any]:
    """A mrkdwn section, cut to Slack's limit (escaping can lengthen the text it was given)."""
    clipped = text if len(text) <= SECTION_LIMIT else text[: SECTION_LIMIT - 1] + "…"
    return {"type": "section", "text": {"type": "mrkdwn", "text": clipped}}


def _listed(labels: Sequence[str]) -> str:
    text = "\n".join(f"• {escape(label)}" for label in labels)
    return text if len(text) <= SET_LIST_LIMIT else text[: SET_LIST_LIMIT - 1] + "…"


def set_status(
    template: str,
    labels: Sequence[str],
    *,
    user_id: str,
    images: int,
    outcome: Literal["running", "sheet", "empty"] = "running",
) -> Message:
    """The set's thread root: the prompt as written, its variants, who asked, and how the set stands
    (running, its contact sheet posted, or ended without any image)."""
    count = len(labels)
    headline = {
        "running": f":twisted_rightwards_arrows: *{count} variants* · {images} images, one job each below",
        "sheet": f":frame_with_picture: *{count} variants* · the contact sheet is in the thread",
        "empty": f":x: *{count} variants* · none of them made an image, so there is no contact sheet",
    }[outcome]
    quoted = "> " + escape(template[:1500]).replace("\n", "\n> ")
    return {
        "text": f"{count} variants of: {escape(template[:200])}",
        "blocks": [
            _section(f"{headline}\n{quoted}"),
            _section(_listed(labels)),
            {
                "type": "context",
                "elements": [
                    {
                        "type": "mrkdwn",
                        "text": f"<@{user_id}> · a contact sheet of every variant follows when all are done",
                    }
                ],
            },
        ],
    }


def sheet_comment(template: str, *, user_id: str, tiles: int) -> str:
    """The contact sheet's message: what it shows, and an invitation to vote on it."""
    return (
        f"<@{user_id}> *Contact sheet* · {tiles} tiles of “{escape(template[:300])}”, numbered as "
        f"labelled. Which one wins? Vote with the tile's number on this message ({sheet_numbers(tiles)}); "
        "these votes count with the ones on the results in the thread."
    )


def sheet_title(template: str) -> str:
    """The sheet file's title."""
    return f"Contact sheet · {template[:80]}"


def not_all_started(problems: Sequence[str]) -> Message:
    """Some variants could not be started (their status messages were refused)."""
    listed = "\n".join(f"• {escape(problem)}" for problem in problems[:8])
    return notice(
        ":warning: Some variants were not started (nothing was sent to Oxen.ai for them); the contact "
        f"sheet shows them as not started:\n{listed}"
    )


def sheet_not_posted(code: str) -> Message:
    """The contact sheet could not be posted now."""
    return notice(
        f":warning: Slack refused the contact sheet ({escape(code)}). Your variants' images are in the "
        "thread; Dreamboard tries the sheet again at its next start."
    )


def set_abandoned(template: str) -> Message:
    """A set was stored but Dreamboard stopped before it could post its status message."""
    return notice(
        ":warning: Dreamboard restarted before your permutations could start, so none of them ran and "
        f"nothing was paid. Send the command again:\n> {escape(template[:1500])}"
    )
