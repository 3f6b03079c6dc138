"""Slack's Web API rate limits for FakeSlack: per-method tiers and the per-channel message limit,
refused as Slack refuses them (HTTP 429, `{"ok": false, "error": "ratelimited"}`, integer Retry-After).

Sources (doc references are to ../shared/docs/slack.md unless a URL is given):
- Tiers, "per API method per app per workspace": Tier 1 1+/min, Tier 2 20+/min, Tier 3 50+/min, Tier 4
  100+/min; bursts are "tolerated" (Tier 1), "occasional" (2), "welcome" (3), "generous" (4), with no size
  given (slack.md §4; https://docs.slack.dev/apis/web-api/rate-limits).
- chat.postMessage: a special tier, "generally" one message per second per channel, "short bursts >1
  allowed", plus a workspace-wide limit whose size is not published (same page).
- The answer: HTTP 429 with a Retry-After header holding "the number of seconds until you can retry"
  (api.slack.com/docs/rate-limits, quoted in os/slacker#40); body `{"ok": false, "error": "ratelimited"}`
  (slack.md §7.2, python-slack-sdk's own test server).

Where the docs are silent the stricter reading is taken and said so next to the number:
- the published per-minute floors are the sustained rates, and a burst is a quarter of a minute's
  allowance (at least 1), not a whole minute's;
- a channel takes a burst of 3 messages, then 1 per second (the size the issue 11 measurements used);
- `files.completeUploadExternal` sharing into a channel posts a message there, so it also spends that
  channel's message allowance (the docs do not say whether it does);
- methods missing from the table below are Tier 2 ("most methods" are at least Tier 2);
- a refused call spends nothing, and Retry-After is rounded up to whole seconds, at least 1.

Not modelled: chat.postMessage's workspace-wide limit (unpublished); limits shared across workspaces or
apps; stricter limits for apps that ignore 429s; the Events API's 30 000 events per hour
(`app_rate_limited`, slack.md §1.6); the 1/min limit of conversations.history/replies for commercially
distributed non-Marketplace apps (slack.md §3.4); response_url's 5 uses in 30 minutes; the upload host
(bytes POSTed to the upload URL), which only FakeSlack.fault limits.

`speed` runs Slack's clock faster so scenario tests keep the same shape in less time: at speed 20 a channel
takes 20 posts a second and "Retry-After: 1" means 1/20 s of real time. The bot is told the same factor
(its SLACK_POST_INTERVAL setting is 1/speed). Retry-After stays an integer, as Slack sends it.
"""

from __future__ import annotations

import math
import time
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

SCENARIO_SPEED = 20.0
"""How much faster than Slack's clock the scenario tests run (FakeSlack's default)."""

TIER_PER_MINUTE = {1: 1, 2: 20, 3: 50, 4: 100}
"""The published floors of the four tiers (slack.md §4)."""

METHOD_TIERS = {
    # slack.md §4 and the method pages on docs.slack.dev/reference/methods/<method> ("Rate limits" facts).
    "chat.update": 3,
    "chat.delete": 3,
    "chat.postEphemeral": 4,
    "chat.getPermalink": 4,
    "conversations.history": 3,
    "conversations.replies": 3,
    "reactions.get": 3,
    "reactions.add": 3,
    "files.getUploadURLExternal": 4,
    "files.completeUploadExternal": 4,
    "files.info": 4,
    "files.delete": 3,
    "users.info": 4,
    "views.open": 4,
    "views.publish": 4,
    "apps.connections.open": 1,
}
"""Tier by method. auth.test is "Special" with no published number: the Tier 2 default applies."""

DEFAULT_TIER = 2
CHANNEL_BURST = 3
CHANNEL_PER_SECOND = 1.0
CHANNEL_POSTING = frozenset({"chat.postMessage", "files.completeUploadExternal"})
"""Methods that put a message into a channel (and so spend its one-per-second allowance)."""


@dataclass
class Bucket:
    """A token bucket on Slack's clock: `capacity` calls at once, refilled at `rate` per second."""

    capacity: float
    rate: float
    tokens: float
    stamp: float

    def take(self, now: float) -> float:
        """Spend one token and return 0, or return the Slack seconds until one is available."""
        self.tokens = min(self.capacity, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return 0.0
        return (1.0 - self.tokens) / self.rate

    def wait(self, now: float) -> float:
        """The Slack seconds until a token is available (0 when one is), spending nothing."""
        tokens = min(self.capacity, self.tokens + (now - self.stamp) * self.rate)
        return 0.0 if tokens >= 1.0 else (1.0 - tokens) / self.rate


class RateLimits:
    """Decides, per call, whether Slack would refuse it, and with which Retry-After."""

    def __init__(
        self, *, speed: float = 1.0, clock: Callable[[], float] = time.monotonic, enabled: bool = True
    ) -> None:
        if speed <= 0:
            raise ValueError("speed must be positive")
        self.speed = speed
        self.enabled = enabled
        self._clock = clock
        self._start = clock()
        self._buckets: dict[tuple[str, str], Bucket] = {}
        self.spent: Counter[tuple[str, str]] = Counter()
        """Calls let through, per bucket."""
        self.refused: list[tuple[str, str, int]] = []
        """Every refusal: (method, bucket key, Retry-After)."""

    def slack_now(self) -> float:
        """Seconds on Slack's (scaled) clock since this object was made."""
        return (self._clock() - self._start) * self.speed

    def check(self, method: str, params: Mapping[str, Any]) -> int | None:
        """None when the call may proceed (its allowance is spent), else the Retry-After in seconds."""
        if not self.enabled:
            return None
        now = self.slack_now()
        buckets: list[tuple[tuple[str, str], Bucket]] = []
        if method != "chat.postMessage":
            # chat.postMessage is a special tier: its workspace-wide limit is unpublished and not modelled;
            # its per-channel bucket is what limits it.
            buckets.append((("method", method), self._method_bucket(method, now)))
        channel = _channel(method, params)
        if channel is not None:
            buckets.append((("channel", channel), self._channel_bucket(channel, now)))
        if not buckets:
            return None  # chat.postMessage naming no channel: the method answers `channel_not_found` itself
        waits = [(bucket.wait(now), key) for key, bucket in buckets]
        longest, key = max(waits)
        if longest > 0:
            retry_after = max(1, math.ceil(longest))
            self.refused.append((method, ":".join(key), retry_after))
            return retry_after
        for key, bucket in buckets:
            bucket.take(now)
            self.spent[key] += 1
        return None

    def least_seconds(self) -> dict[str, float]:
        """The least time (Slack's seconds) these limits allow for the calls let through so far, per
        bucket: the calls past its burst at its rate. The slowest bucket sets the pace."""
        return {
            ":".join(key): max(0.0, count - self._buckets[key].capacity) / self._buckets[key].rate
            for key, count in self.spent.items()
        }

    def _method_bucket(self, method: str, now: float) -> Bucket:
        key = ("method", method)
        if key not in self._buckets:
            per_minute = TIER_PER_MINUTE[METHOD_TIERS.get(method, DEFAULT_TIER)]
            burst = float(max(1, per_minute // 4))
            self._buckets[key] = Bucket(burst, per_minute / 60.0, burst, now)
        return self._buckets[key]

    def _channel_bucket(self, channel: str, now: float) -> Bucket:
        key = ("channel", channel)
        if key not in self._buckets:
            self._buckets[key] = Bucket(CHANNEL_BURST, CHANNEL_PER_SECOND, CHANNEL_BURST, now)
        return self._buckets[key]


UNLIMITED_SPEED = 1000.0


def unlimited() -> RateLimits:
    """No limits, for measurements of the bot's own overhead (the bench scenarios other than the
    bursts), where Slack's limits would be all that is measured. Its clock runs 1000x fast, so a bot
    told the same speed spaces its posts by only 1 ms."""
    return RateLimits(speed=UNLIMITED_SPEED, enabled=False)


def _channel(method: str, params: Mapping[str, Any]) -> str | None:
    """The channel a message-posting call posts into (None for other methods, or an unshared upload)."""
    if method not in CHANNEL_POSTING:
        return None
    channel = params.get("channel") or params.get("channel_id")
    if not channel and params.get("channels"):
        channel = str(params["channels"]).split(",")[0]
    return str(channel) if channel else None
