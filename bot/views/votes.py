"""Block Kit for vote-to-pick: the `/imagine top` digest, vote announcements, winners and the answers
that explain a vote that did not count or could not open (pure)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from bot.domain.votes import MAX_TOP, Period, VoteHint, VoteRound, describe_duration
from bot.store.model import Job
from bot.views.blocks import Message, escape, files_ready, notice

WINNER_EVENT = "dreamboard_vote_winner"
"""The metadata event_type of a winner message; its payload names the vote (found again after a crash)."""
NUMBER_EMOJI = (
    ":one:",
    ":two:",
    ":three:",
    ":four:",
    ":five:",
    ":six:",
    ":seven:",
    ":eight:",
    ":nine:",
    ":keycap_ten:",
)
"""The keycaps that vote: 1️⃣–4️⃣ for a result's images, 1️⃣–🔟 for a contact sheet's tiles."""
_PROMPT_CHARS = 200


@dataclass(frozen=True)
class Pick:
    """One ranked image: its result, its index, its votes and its Slack file."""

    job: Job
    idx: int
    votes: int
    file_id: str | None


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _date(stamp: float) -> str:
    """A date Slack shows in each reader's time zone (with a UTC fallback)."""
    fallback = datetime.fromtimestamp(int(stamp), UTC).strftime("%Y-%m-%d %H:%M UTC")
    return f"<!date^{int(stamp)}^{{date_short_pretty}} at {{time}}|{fallback}>"


def _votes(count: int) -> str:
    return f"{count} vote" if count == 1 else f"{count} votes"


def _which(pick: Pick) -> str:
    return f"image {pick.idx + 1} of {pick.job.n}" if pick.job.n > 1 else "image"


def _thumbnail(pick: Pick, ready_before: float) -> dict[str, Any] | None:
    """A `slack_file` image of the picked image, once Slack has had time to process it."""
    if pick.file_id is None or not files_ready(pick.job, ready_before):
        return None
    return {"type": "image", "slack_file": {"id": pick.file_id}, "alt_text": _clip(pick.job.prompt, 2000)}


def _link(url: str, label: str) -> str:
    return f"<{url}|{label}>" if url else label


def _pick_section(text: str, pick: Pick, ready_before: float) -> dict[str, Any]:
    section: dict[str, Any] = {"type": "section", "text": {"type": "mrkdwn", "text": _clip(text, 3000)}}
    image = _thumbnail(pick, ready_before)
    if image is not None:
        section["accessory"] = image
    return section


def digest(
    picks: list[Pick], *, period: Period, channel_id: str, links: dict[str, str], ready_before: float
) -> Message:
    """The public `/imagine top` digest: rank, votes, credit, prompt, thumbnail and thread link per image.
    `links` maps job ids to their thread's link."""
    head = f":trophy: *Most-voted results in <#{channel_id}> {period.phrase}*"
    blocks: list[dict[str, Any]] = [{"type": "section", "text": {"type": "mrkdwn", "text": head}}]
    for place, pick in enumerate(picks[:MAX_TOP], start=1):
        text = (
            f"*{place}.* {_votes(pick.votes)} · <@{pick.job.user_id}> · {_which(pick)} · "
            f"{_link(links.get(pick.job.id, ''), 'thread')}\n"
            f"> {escape(_clip(pick.job.prompt, _PROMPT_CHARS))}"
        )
        blocks.append(_pick_section(text, pick, ready_before))
    blocks.append(
        {
            "type": "context",
            "elements": [
                {
                    "type": "mrkdwn",
                    "text": "Vote with :+1: on a result, or :one:–:four: on a result with several images.",
                }
            ],
        }
    )
    return {"text": f"Most-voted results {period.phrase}", "blocks": blocks}


def nothing_voted(period: Period) -> Message:
    """The ephemeral answer when no result of the channel has a vote in the period."""
    wider = " Try `/imagine top all`." if period is not Period.ALL else ""
    return notice(
        f":ballot_box_with_ballot: No result in this channel has a vote {period.phrase} yet. React :+1: on a "
        f"result (or :one:–:four: on one with several images) to vote.{wider}"
    )


def hint(kind: VoteHint, image_count: int) -> Message:
    """Why a voting reaction on a result did not count (sent once per person and message)."""
    numbers = " ".join(NUMBER_EMOJI[:image_count])
    if kind is VoteHint.PICK_A_NUMBER:
        return notice(
            f":ballot_box_with_ballot: This result has {image_count} images, so :+1: does not say which "
            f"one you pick: react {numbers} instead (one vote per image)."
        )
    if image_count == 1:
        return notice(":ballot_box_with_ballot: This result has one image: react :+1: to vote for it.")
    return notice(
        f":ballot_box_with_ballot: This result has {image_count} images: react {numbers} to vote for one."
    )


def sheet_numbers(tiles: int) -> str:
    """The keycaps that vote on a contact sheet of `tiles` tiles (a range when there are more than 3)."""
    votable = min(tiles, len(NUMBER_EMOJI))
    if votable <= 3:
        return " ".join(NUMBER_EMOJI[:votable])
    return f"{NUMBER_EMOJI[0]}–{NUMBER_EMOJI[votable - 1]}"


def sheet_hint(kind: VoteHint, tiles: int) -> Message:
    """Why a voting reaction on a contact sheet did not count (sent once per person and sheet)."""
    beyond = (
        f" Tiles past {len(NUMBER_EMOJI)} take their votes on their results in the thread."
        if tiles > len(NUMBER_EMOJI)
        else ""
    )
    if kind is VoteHint.PICK_A_NUMBER:
        return notice(
            f":ballot_box_with_ballot: This contact sheet has {tiles} tiles, so :+1: does not say which one "
            f"you pick: react with the tile's number ({sheet_numbers(tiles)}) instead.{beyond}"
        )
    return notice(
        ":ballot_box_with_ballot: That tile has no image to vote for (a grey tile is a variant that failed "
        f"or was cancelled): react with the number of a tile that shows one ({sheet_numbers(tiles)}).{beyond}"
    )


def announcement(round: VoteRound, *, thread_link: str, root: Job | None, in_thread: bool) -> Message:
    """The public message that opens a vote (in the thread, or in the channel naming the thread)."""
    seconds = int(round.deadline - round.opened_at)
    closes = _date(round.deadline)
    where = "on the results in this thread"
    if not in_thread:
        about = f" “{escape(_clip(root.prompt, 100))}”" if root is not None else ""
        where = f"on the results in {_link(thread_link, 'this thread')}{about}"
    text = (
        f":ballot_box_with_ballot: <@{round.opened_by}> opened a vote {where}. React :+1: on a result, or "
        f":one:–:four: on one with several images. It closes in {describe_duration(seconds)} "
        f"({closes}); the winner is posted in <#{round.channel_id}>."
    )
    return {
        "text": "A vote is open",
        "blocks": [{"type": "section", "text": {"type": "mrkdwn", "text": text}}],
    }


def winner(round: VoteRound, picks: list[Pick], *, thread_link: str, ready_before: float) -> Message:
    """The channel message that closes a vote: the winner with credit and links, or that nobody voted.
    Tagged with metadata naming the vote, so a restart can tell whether it was posted."""
    thread = _link(thread_link, "the thread")
    metadata = {"event_type": WINNER_EVENT, "event_payload": {"vote_id": round.id}}
    if not picks:
        text = f":ballot_box_with_ballot: The vote on {thread} closed with no votes, so there is no winner."
        blocks = [{"type": "section", "text": {"type": "mrkdwn", "text": text}}]
        return {"text": "The vote closed with no votes", "blocks": blocks, "metadata": metadata}
    best = picks[0]
    tie = len(picks) > 1 and picks[1].votes == best.votes
    text = (
        f":trophy: The vote on {thread} is closed. The winner, with {_votes(best.votes)}: "
        f"{_which(best)} by <@{best.job.user_id}> (job `{best.job.id}`)"
        f"{' — tied, and the earlier result wins' if tie else ''}.\n"
        f"> {escape(_clip(best.job.prompt, _PROMPT_CHARS))}"
    )
    return {
        "text": f"Vote winner: {_which(best)} by <@{best.job.user_id}>",
        "blocks": [_pick_section(text, best, ready_before)],
        "metadata": metadata,
    }


def winner_not_posted(round: VoteRound, winner_message: Message, code: str) -> Message:
    """The DM to whoever opened a vote when Slack refused its winner message in the channel: why, and
    the outcome itself (without the channel message's metadata)."""
    why = (
        f":warning: Your vote closed, but Slack refused its result in <#{round.channel_id}> "
        f"({escape(code)}). Dreamboard posts it there when it next starts. The result:"
    )
    blocks = [{"type": "section", "text": {"type": "mrkdwn", "text": why}}, *winner_message["blocks"]]
    return {"text": f"Your vote closed; its result could not be posted ({escape(code)})", "blocks": blocks}


def already_open(round: VoteRound) -> Message:
    """The refusal of a second vote on a thread."""
    return notice(
        f":no_entry: This thread already has a vote open; it closes "
        f"{_date(round.deadline)}. One vote per thread at a time."
    )


def no_thread() -> Message:
    """The refusal of `/imagine vote` in a channel without Dreamboard results."""
    return notice(
        ":no_entry: There is no Dreamboard thread in this channel to vote on yet. Make some images with "
        "`/imagine <prompt>` first, then `/imagine vote 15m`."
    )


def not_a_dreamboard_thread() -> Message:
    """The refusal of `@Dreamboard vote` in a thread without Dreamboard results."""
    return notice(
        ":no_entry: Votes run on Dreamboard threads: write `@Dreamboard vote 15m` in a thread that holds "
        "results, or use `/imagine vote 15m` in the channel."
    )


def bad_duration(problem: str) -> Message:
    """The answer to a vote whose duration cannot be used."""
    return notice(f":no_entry: {escape(problem)}")


def not_posted(what: str, code: str) -> Message:
    """The answer when Slack refused to post `what` (a vote is then not opened)."""
    return notice(
        f":warning: Slack refused to post {what} ({escape(code)}), so nothing happened. "
        "Try again in a moment."
    )
