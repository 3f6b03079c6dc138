"""Reading a cursor-paginated Web API method (conversations.history, conversations.replies) page by page."""

from __future__ import annotations

from collections.abc import AsyncGenerator, Awaitable, Callable
from typing import Any

from bot.slack.errors import call

Fetch = Callable[[str | None], Awaitable[Any]]
"""One call of the method for a cursor (None: the first page)."""


async def message_pages(fetch: Fetch) -> AsyncGenerator[list[dict[str, Any]], None]:
    """The `messages` of each page, in Slack's order, until Slack says there are no more; a failure
    is a SlackError. Stop iterating to stop reading."""
    cursor: str | None = None
    while True:
        page = await call(fetch(cursor))
        yield list(page.get("messages") or [])
        cursor = (page.get("response_metadata") or {}).get("next_cursor")
        if not page.get("has_more") or not cursor:
            return
