"""Calendar days in a user's time zone (App Home's "Today")."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone, tzinfo
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError


def user_timezone(zone: str | None, offset: int) -> tzinfo:
    """The user's time zone: the IANA `zone` Slack reports when this system knows it (DST-correct), else
    the fixed `offset` in seconds east of UTC, else UTC."""
    if zone:
        try:
            return ZoneInfo(zone)
        except (ZoneInfoNotFoundError, ValueError):
            pass
    try:
        return timezone(timedelta(seconds=offset))
    except ValueError:
        return UTC


def start_of_day(now: float, tz: tzinfo) -> float:
    """Unix time of the most recent midnight in `tz`, at or before `now`."""
    local = datetime.fromtimestamp(now, tz)
    return local.replace(hour=0, minute=0, second=0, microsecond=0).timestamp()
