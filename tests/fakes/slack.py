"""FakeSlack: a loopback Slack Web API, private file host, response URLs, Socket Mode endpoint and a
signed-request sender, recording every call (DESIGN.md, "Test harness").

Doc references are to ../shared/docs/slack.md (from the repo root) unless a URL is given. Where the docs
are silent the fake picks the stricter behaviour and says so next to the code."""

from __future__ import annotations

import asyncio
import functools
import itertools
import json
import random
import re
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Literal
from urllib.parse import parse_qs, urlencode
from zoneinfo import ZoneInfo

import aiohttp
from aiohttp import web

from tests.fakes import blockkit
from tests.fakes.manifest import bot_scopes
from tests.fakes.ratelimits import SCENARIO_SPEED, RateLimits
from tests.fakes.recorder import Call, Recorder, drop_connection, take_fault
from tests.fakes.signing import slack_signature

BROADCAST = re.compile(r"<!(channel|here|everyone)(\|[^>]*)?>")
"""Slack's special mentions that notify a whole channel or workspace (slack.md, formatting)."""
SIGN_IN_PAGE = "<!DOCTYPE html><html><head><title>Slack</title></head><body>Sign in to continue</body></html>"
# Slack's 5xx answer is its HTML "Server Error" page, not a JSON `ok: false` body: python-slack-sdk's own
# test server answers its `server_error_only_once` and `error_html_response` cases with this page as
# text/html, status 500 or 503 (slack.md §7.2; SDK tests/slack_sdk/web/mock_web_api_handler.py). Only a 429
# carries `{"ok": false, "error": "ratelimited"}` and `Retry-After` (slack.md §4, rate limits).
SERVER_ERROR_PAGE = (
    '<!DOCTYPE html>\n<html lang="en">\n<head>\n\t<meta charset="utf-8">\n'
    "\t<title>Server Error | Slack</title>\n</head>\n<body>\n\t<h1>Server Error</h1>\n"
    "\t<p>It seems like there\u2019s a problem connecting to our servers, and we\u2019re investigating the "
    "issue.</p>\n</body>\n</html>"
)
TRUE_VALUES = frozenset({"1", "true"})
DEFAULT_ZONE = "America/Los_Angeles"
"""users.info `tz` of users a test did not place (not UTC, so a bot that ignores time zones shows it)."""

ACK_DEADLINE = 3.0
"""Slack waits 3 s for the answer to a slash command, a block action or a view submission (slack.md §1.1, the
Bolt "Acknowledging requests" page; §3.5 "Respond within 3000 ms"). Later, Slack shows the user an error
(`operation_timeout` for a command, as reported by app developers) and drops whatever the answer said, while
Bolt itself stops waiting for ack() after its `ack_timeout` of 3 s and answers 404 (slack_bolt
listener/asyncio_runner.py)."""
TRIGGER_LIFETIME = 3.0
"""A trigger_id opens a modal only within 3 s of being issued (slack.md §4, Modals): later views.open answers
`expired_trigger_id`, and a trigger used once answers `exchanged_trigger_id` the second time."""
DEADLINED_KINDS = frozenset({"command", "block_actions", "view_submission", "shortcut", "message_action"})

# Bot-token scopes each implemented method requires (any one of them): the "Required scopes" of each method's
# page on docs.slack.dev/reference/methods/<method>. A call without one answers `missing_scope` with `needed`
# and `provided` (the shape other Slack clients' tests record, e.g. {"ok":false,"error":"missing_scope",
# "needed":"chat:write","provided":"commands"}). Methods not listed need no scope.
HISTORY_SCOPES = frozenset({"channels:history", "groups:history", "im:history", "mpim:history"})
METHOD_SCOPES: dict[str, frozenset[str]] = {
    "chat.postMessage": frozenset({"chat:write"}),
    "chat.update": frozenset({"chat:write"}),
    "chat.delete": frozenset({"chat:write"}),
    "chat.postEphemeral": frozenset({"chat:write"}),
    "reactions.add": frozenset({"reactions:write"}),
    "reactions.get": frozenset({"reactions:read"}),
    "files.info": frozenset({"files:read"}),
    "files.getUploadURLExternal": frozenset({"files:write"}),
    "files.completeUploadExternal": frozenset({"files:write"}),
    "files.delete": frozenset({"files:write"}),
    "users.info": frozenset({"users:read"}),
    "conversations.replies": HISTORY_SCOPES,
    "conversations.history": HISTORY_SCOPES,
    "conversations.info": frozenset({"channels:read", "groups:read", "im:read", "mpim:read"}),
}
OWN_MEMBERSHIP_EVENTS = frozenset(
    {"member_joined_channel", "member_left_channel", "channel_left", "group_left"}
)


class NotDeliveredError(AssertionError):
    """A test asked the fake to deliver an event Slack would never send (see FakeSlack.send_event)."""


@dataclass
class FakeChannel:
    """A conversation as Slack knows it, and whether the bot is in it."""

    id: str
    member: bool = True
    private: bool = False
    archived: bool = False


@dataclass(frozen=True)
class SignedRequest:
    """A request the fake sent to the bot and how long the bot took to answer it."""

    kind: str
    status: int
    elapsed: float

    @property
    def late(self) -> bool:
        """Whether Slack would have given up on the answer (only for kinds with an ack deadline)."""
        return self.kind in DEADLINED_KINDS and self.elapsed >= ACK_DEADLINE


PAYLOADS = Path(__file__).parent / "payloads"


@functools.cache
def _example(name: str) -> str:
    return (PAYLOADS / f"{name}.json").read_text()


def example(name: str) -> dict[str, Any]:
    """A fresh copy of one of Slack's documented payload examples (tests/fakes/payloads/README.md)."""
    loaded: dict[str, Any] = json.loads(_example(name))
    return loaded


SHARE_DELAY = 1.0
"""Seconds between files.completeUploadExternal's answer and the share (message, `shares`, event). Slack
completes the share asynchronously, after security scans, so its answer and the first files.info usually
lack `shares` (seratch in slackapi/bolt-js#2115; python-slack-sdk#1277, #1363), and a block naming the file
fails until about a second later (python-slack-sdk#1521, slack.md §2.2). The default is that second."""
MIMETYPES = {"png": "image/png", "jpg": "image/jpeg", "jpeg": "image/jpeg", "gif": "image/gif"}


@dataclass
class FakeFile:
    """A file Slack holds: reserved by getUploadURLExternal or added by a test as a user upload."""

    id: str
    filename: str
    length: int
    content: bytes = b""
    uploaded: bool = False
    completed: bool = False
    title: str = ""
    mimetype: str = "application/octet-stream"
    user: str = ""
    channel: str | None = None
    thread_ts: str | None = None
    shares: dict[str, dict[str, list[dict[str, str]]]] = field(default_factory=dict)
    completed_at: float | None = None
    """When the upload completed (time.monotonic); Slack processes the file for a while after that."""
    scanned: bool = True
    """False between completeUploadExternal and the share: mimetype, filetype and pretty_type read "" then
    (the answer body in python-slack-sdk#1590; node-slack-sdk#2040: filled in after the malware scan)."""


@dataclass
class Fault:
    """What the next call(s) of a method answer instead of (or, with `after`, after) the real thing."""

    error: str | None = None
    status: int | None = None
    retry_after: int | None = None
    delay: float = 0.0
    times: int = 1
    after: bool = False
    drop: bool = False


@dataclass(frozen=True)
class Rejection:
    """A payload Slack refused as invalid Block Kit: where it was sent, and Slack's messages."""

    surface: str
    errors: list[str]


@dataclass(frozen=True)
class SignedResponse:
    """The bot's answer to a request the fake sent."""

    status: int
    text: str
    elapsed: float


class FakeSlack:
    """Use as `async with FakeSlack() as slack:`; point the bot at `slack.api_url`."""

    def __init__(
        self,
        *,
        bot_token: str = "xoxb-test-token",
        app_token: str = "xapp-test-token",
        signing_secret: str = "test-signing-secret",
        team_id: str = "T0TEAM",
        bot_user_id: str = "U0BOT",
        bot_id: str = "B0BOT",
        keep_uploads: bool = True,
        file_processing_delay: float = 1.0,
        rate_limits: RateLimits | None = None,
        share_delay: float | None = None,
        event_files: Literal["full", "stub"] = "full",
    ) -> None:
        """`share_delay`: see SHARE_DELAY; by default Slack's second runs at the rate limits' speed, like
        every other Slack clock of the fake (20× in scenarios), and a test about lateness sets its own.
        `event_files`: whether the bot's own file_share events carry full file objects or
        `file_access: "check_file_info"` stubs (as Slack sends in Slack Connect channels, and as the bot
        must expect anywhere: the stub keeps only the id)."""
        self.bot_token = bot_token
        self.app_token = app_token
        self.signing_secret = signing_secret
        self.team_id = team_id
        self.bot_user_id = bot_user_id
        self.bot_id = bot_id
        self.keep_uploads = keep_uploads
        # A slack_file image block is refused for a while after its upload completes: "about 1 s delay
        # fixes it" (slack.md §2.2; python-slack-sdk#1521, #1658, bolt-python#1251).
        self.file_processing_delay = file_processing_delay
        self.broadcasts: list[str] = []
        """Test guard, not Slack behaviour (Slack would notify everyone): every `<!channel>`, `<!here>` or
        `<!everyone>` the bot sent anywhere (Web API, ack bodies, response_url, Socket Mode acks) that is
        not in `allowed_broadcasts`. Leaving the context manager with one here fails the test: Dreamboard
        writes no broadcast of its own, so one can only be user input that escaped escaping."""
        self.allowed_broadcasts: set[str] = set()
        self.rejections: list[Rejection] = []
        """Every payload refused as invalid Block Kit; the test fixture fails a test that leaves one here
        (a test that provokes them on purpose asserts on them and clears the list)."""
        self.user_zones: dict[str, str] = {}
        """users.info `tz` per user id (IANA name); DEFAULT_ZONE for the others."""
        self.rate_limits = rate_limits or RateLimits(speed=SCENARIO_SPEED)
        """Slack's rate limits, on by default at the scenario speed (tests/fakes/ratelimits.py)."""
        self.share_delay = SHARE_DELAY / self.rate_limits.speed if share_delay is None else share_delay
        self.event_files = event_files
        self.events_url: str | None = None
        """Where the bot's events go in HTTP mode (the harness sets it when the bot starts)."""
        self.delivered_events: list[dict[str, Any]] = []
        """Events the fake sent to the bot on its own (file shares), with how each delivery went."""
        self._sharing: set[asyncio.Task[None]] = set()
        self.admins: set[str] = set()
        self.recorder = Recorder()
        self.uploaded_files: dict[str, FakeFile] = {}
        self.deleted_files: list[str] = []
        self.file_host = "127.0.0.1"
        self.origin_host = "localhost"
        """A second name of the private file host, for Enterprise Grid's redirect (see `redirect_files`)."""
        self.url = ""
        self.scopes: set[str] = set(bot_scopes())
        """The bot token's granted scopes: by default exactly what manifest.yaml asks for."""
        self.channels: dict[str, FakeChannel] = {}
        self.signed: list[SignedRequest] = []
        self._missing_channels: set[str] = set()
        self.clock: Callable[[], float] = time.monotonic
        """Times ack delays and trigger ages (a test may substitute a clock it advances)."""
        self._triggers: dict[str, float] = {}
        self._exchanged: set[str] = set()
        self._file_redirect: str | None = None
        self._messages: dict[str, list[dict[str, Any]]] = {}
        self._faults: dict[str, list[Fault]] = {}
        self._html_instead: set[str] = set()
        self._ids = itertools.count(1)
        self._last_ts = 0.0
        self._sockets: list[web.WebSocketResponse] = []
        self._connected: set[int] = set()
        """Indexes in `_sockets` of the connections whose client has not gone (see `_socket`)."""
        self.socket_choice = random.Random()
        """Picks the connection each envelope goes to (see `socket_send`); a test may seed it."""
        self.socket_deliveries: list[int] = []
        """For each envelope sent, the index (in connection order) of the connection it went to."""
        self._acks: dict[str, asyncio.Future[dict[str, Any]]] = {}
        self._runner: web.AppRunner | None = None
        self._session: aiohttp.ClientSession | None = None

    # -- lifecycle -------------------------------------------------------------------------------

    async def __aenter__(self) -> FakeSlack:
        app = web.Application(handler_args={"handler_cancellation": True})
        app.on_response_prepare.append(self._scope_header)
        app.router.add_route("*", "/api/{method}", self._api)
        app.router.add_post("/upload/{file_id}", self._upload)
        app.router.add_get("/files-pri/{path:.*}", self._download)
        app.router.add_get("/files-origin/{path:.*}", self._download)
        app.router.add_post("/response/{n}", self._response_url)
        app.router.add_get("/socket-mode", self._socket)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.5)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = self._runner.addresses[0][1]
        self.url = f"http://127.0.0.1:{port}"
        self._session = aiohttp.ClientSession()
        return self

    async def __aexit__(self, *_: object) -> None:
        try:
            await self._stop()
        finally:
            assert not self.broadcasts, f"the bot sent live broadcast mentions to Slack: {self.broadcasts}"

    def _guard_broadcasts(self, surface: str, payload: object) -> None:
        """Note every broadcast mention in `payload` (any depth) that the test did not allow."""
        text = payload if isinstance(payload, str) else json.dumps(payload, default=str)
        for found in BROADCAST.finditer(text):
            if found.group(0) not in self.allowed_broadcasts:
                self.broadcasts.append(f"{surface}: {found.group(0)}")

    async def _stop(self) -> None:
        for task in list(self._sharing):
            task.cancel()
        await asyncio.gather(*self._sharing, return_exceptions=True)
        for ws in list(self._sockets):
            await ws.close()
        if self._session is not None:
            await self._session.close()
        if self._runner is not None:
            await self._runner.cleanup()

    @property
    def api_url(self) -> str:
        """The Web API base URL (slack_sdk's `base_url`)."""
        return self.url + "/api/"

    # -- recorder shortcuts ----------------------------------------------------------------------

    @property
    def calls(self) -> list[Call]:
        """Every call received, in order."""
        return self.recorder.calls

    def calls_to(self, method: str) -> list[Call]:
        """Calls of one Web API method (or "response_url", "upload", "file_download")."""
        return self.recorder.calls_to(method)

    async def wait_for(self, method: str, **kwargs: Any) -> list[Call]:
        """See Recorder.wait_for."""
        return await self.recorder.wait_for(method, **kwargs)

    # -- test controls ---------------------------------------------------------------------------

    def messages(self, channel: str) -> list[dict[str, Any]]:
        """Messages in a channel (roots and replies), oldest first."""
        return self._messages.get(channel, [])

    def add_channel(
        self, channel: str, *, member: bool = True, private: bool = False, archived: bool = False
    ) -> FakeChannel:
        """Register a conversation. Unregistered ids are public channels the bot is a member of, so a test
        only names the channels that differ."""
        self._missing_channels.discard(channel)
        self.channels[channel] = FakeChannel(channel, member=member, private=private, archived=archived)
        return self.channels[channel]

    def remove_channel(self, channel: str) -> None:
        """Make `channel` unknown to Slack (deleted, or another workspace's): every call answers
        `channel_not_found`."""
        self.channels.pop(channel, None)
        self._missing_channels.add(channel)

    def channel(self, channel: str) -> FakeChannel | None:
        """The conversation as Slack knows it (None when unknown)."""
        if channel in self._missing_channels:
            return None
        return self.channels.get(channel) or FakeChannel(channel)

    def shares_pending(self) -> int:
        """Completed uploads whose share has not happened yet."""
        return len(self._sharing)

    async def wait_shared(self, timeout: float = 10.0) -> None:
        """Wait until every completed upload is shared (its message posted, its event delivered)."""
        await self.recorder.wait_until(lambda: not self._sharing, timeout=timeout)

    def set_channel_error(self, channel: str, error: str) -> None:
        """Shorthand for the registry: `not_in_channel` (a public channel without the bot),
        `channel_not_found` (unknown to Slack) or `is_archived` (archived, the bot still a member)."""
        if error == "not_in_channel":
            self.add_channel(channel, member=False)
        elif error == "channel_not_found":
            self.remove_channel(channel)
        elif error == "is_archived":
            self.add_channel(channel, archived=True)
        else:
            raise ValueError(f"{error!r} is not a channel state; use fault() for other errors")

    def redirect_files(self, host: str | None = "origin") -> None:
        """Answer every private file download on `file_host` with a 302, as Enterprise Grid answers
        files.slack.com with a 302 to files-origin.slack.com (NousResearch/hermes-agent#114483: the second
        host also needs the Bearer token and serves the sign-in page without it). "origin" redirects to
        this fake's `origin_host`; any other value is the host name put in Location (its server is not
        this fake); None stops redirecting. A value with a query (`dreamteam.slack.com/?redir=…`) is
        taken as the whole Location, as Slack's redirect to the workspace sign-in page (slack.md §2.3)."""
        self._file_redirect = host

    def age_trigger(self, trigger_id: str, seconds: float) -> None:
        """Pretend `trigger_id` was issued `seconds` earlier (instead of sleeping past its lifetime)."""
        self._triggers[trigger_id] -= seconds

    def late_acks(self) -> list[SignedRequest]:
        """Requests with an ack deadline that the bot answered too late for Slack."""
        return [request for request in self.signed if request.late]

    def fault(
        self,
        method: str,
        *,
        error: str | None = None,
        status: int | None = None,
        retry_after: int | None = None,
        delay: float = 0.0,
        times: int = 1,
        after: bool = False,
        drop: bool = False,
    ) -> None:
        """Make the next `times` (-1: all) calls of `method` fail (or be slow).

        `method` is a Web API method ("chat.postMessage", "chat.update", "files.completeUploadExternal", ...)
        or "upload" for the upload URL that files.getUploadURLExternal hands out, or "response_url" for the
        response URLs of commands and actions.

        By default the fault answers INSTEAD of processing: wait `delay`, then answer `status` (429: JSON
        `ratelimited` with `Retry-After`; 5xx: Slack's HTML server-error page), or `{"ok": false, "error":
        error}` with HTTP 200, or close the connection without an answer (`drop=True`); with none of these
        the call is processed after the delay (if the client is still there to wait).

        `after=True` means "processed, answer lost": the call is processed for real first (message stored,
        files shared, bytes uploaded), then the answer is replaced by the fault: `delay` before answering
        (a client read timeout or a restart while waiting), a 5xx, an `error` (Slack documents `fatal_error`
        as "It's possible some aspect of the operation succeeded before the error was raised": the
        chat.postMessage error list, mirrored in slack-ruby/slack-api-ref methods/chat/chat.postMessage.json),
        or a dropped connection. slack.md §4: "a retried chat.postMessage after a 5xx can double-post".
        """
        if status is not None and status != 429 and not 500 <= status <= 599:
            raise ValueError("FakeSlack models HTTP 429 and 5xx; use error= for ok:false answers")
        if sum((status is not None, error is not None, drop)) > 1:
            raise ValueError("a fault answers one of: status, error, or a dropped connection")
        if method == "response_url" and after:
            raise ValueError("response_url faults answer instead of the post; after=True is not modelled")
        if method in ("upload", "response_url") and error is not None:
            raise ValueError(f"the {method} endpoint is not the Web API and has no ok:false answers")
        if after and status == 429:
            raise ValueError("a 429 means the call was refused, not processed; after=True cannot model it")
        if status is None and error is None and not drop and not delay:
            raise ValueError("a fault needs a status, an error, drop=True or a delay")
        self._faults.setdefault(method, []).append(
            Fault(error, status, retry_after, delay, times, after=after, drop=drop)
        )

    def clear_faults(self) -> None:
        """Forget every fault that is not used up yet (Slack is healthy again)."""
        self._faults.clear()

    def add_file(
        self,
        content: bytes,
        *,
        name: str = "ref.png",
        mimetype: str = "image/png",
        user: str = "U1",
        channel: str | None = None,
    ) -> dict[str, Any]:
        """Store a user's file on the private host; returns its Slack file object."""
        file = FakeFile(
            id=self._file_id(),
            filename=name,
            length=len(content),
            content=content,
            uploaded=True,
            completed=True,
            title=name,
            mimetype=mimetype,
            user=user,
            channel=channel,
            completed_at=time.monotonic() - self.file_processing_delay,
        )
        self.uploaded_files[file.id] = file
        return self._file_object(file)

    def human_message(
        self,
        channel: str,
        text: str,
        *,
        user: str = "U2",
        thread_ts: str | None = None,
        files: list[dict[str, Any]] | None = None,
        channel_type: str = "channel",
    ) -> dict[str, Any]:
        """Store a person's message in the conversation; returns the `message` event Slack would send
        (payloads/message.json, or message_file_share.json with `files`). A file given as a stub
        (`file_stub`) is a stub only in the event: conversations.replies shows the full object
        (https://docs.slack.dev/apis/slack-connect/#check_file_info)."""
        ts = self._next_ts()
        event = example("message_file_share" if files else "message")
        event.update(text=text, user=user, ts=ts, event_ts=ts, channel=channel, channel_type=channel_type)
        event["client_msg_id"] = str(uuid.uuid4())
        event["blocks"] = [_rich_text(text)]
        if "team" in event:
            event["team"] = self.team_id
        stored: dict[str, Any] = {"type": "message", "user": user, "text": text, "ts": ts}
        stored["blocks"] = event["blocks"]
        if thread_ts:
            event["thread_ts"] = stored["thread_ts"] = thread_ts
            root = self._find(channel, thread_ts)
            # Replies carry the root's author (slack.md §3.1); the stricter choice for an unknown root is
            # to leave it out.
            if root is not None:
                event["parent_user_id"] = stored["parent_user_id"] = root["user"]
        if files:
            event["files"] = files
            stored["files"] = [self._full_file(file) for file in files]
            stored["subtype"] = "file_share"
            stored["upload"] = False
        self._messages.setdefault(channel, []).append(stored)
        return event

    def app_mention(self, message: dict[str, Any]) -> dict[str, Any]:
        """The `app_mention` event Slack sends beside the `message` event for a message that mentions the
        bot (payloads/app_mention.json; it has no `channel_type`, and keeps the thread and files)."""
        event = example("app_mention")
        for key in ("client_msg_id", "text", "user", "ts", "channel", "event_ts"):
            event[key] = message[key]
        event["team"] = self.team_id
        for key in ("thread_ts", "parent_user_id", "files"):
            if key in message:
                event[key] = message[key]
        return event

    @staticmethod
    def file_stub(file: dict[str, Any]) -> dict[str, Any]:
        """The stub an event carries instead of `file` when Slack wants the app to call files.info
        (payloads/file_stub_check_file_info.json)."""
        stub = example("file_stub_check_file_info")
        stub["id"] = file["id"]
        return stub

    def _full_file(self, file: dict[str, Any]) -> dict[str, Any]:
        known = self.uploaded_files.get(str(file.get("id")))
        if file.get("file_access") == "check_file_info" and known is not None:
            return self._file_object(known)
        return file

    def serve_html_instead(self, file_id: str) -> None:
        """Serve the sign-in page for this file even with a valid token."""
        self._html_instead.add(file_id)

    def new_response_url(self) -> str:
        """A fresh `response_url` for a command or action."""
        return f"{self.url}/response/{next(self._ids)}"

    def _issue_trigger(self, trigger_id: str | None = None) -> str:
        """A trigger_id for a command or interaction payload, noting when Slack issued it (views.open
        accepts it once, within TRIGGER_LIFETIME). Reissuing an id (a redelivered payload) keeps its time."""
        trigger = trigger_id or f"{next(self._ids)}.{int(time.time())}.{uuid.uuid4().hex}"
        self._triggers.setdefault(trigger, self.clock())
        return trigger

    # -- sending to the bot ----------------------------------------------------------------------

    async def post_signed(
        self,
        events_url: str,
        body: str,
        *,
        content_type: str,
        retry_num: int | None = None,
        retry_reason: str | None = None,
        bad_signature: bool = False,
    ) -> SignedResponse:
        """POST `body` to the bot signed with the signing secret, as Slack does."""
        assert self._session is not None
        timestamp = str(int(time.time()))
        secret = "not-the-secret" if bad_signature else self.signing_secret
        headers = {
            "Content-Type": content_type,
            "X-Slack-Request-Timestamp": timestamp,
            "X-Slack-Signature": slack_signature(secret, timestamp, body),
        }
        if retry_num is not None:
            headers["X-Slack-Retry-Num"] = str(retry_num)
            headers["X-Slack-Retry-Reason"] = retry_reason or "http_timeout"
        started = self.clock()
        async with self._session.post(events_url, data=body.encode(), headers=headers) as response:
            text = await response.text()
            self._guard_broadcasts("ack", text)
            if response.content_type == "application/json":
                self._check_ack(text)
        elapsed = self.clock() - started
        self.signed.append(SignedRequest(_request_kind(body, content_type), response.status, elapsed))
        return SignedResponse(response.status, text, elapsed)

    def _check_ack(self, text: str) -> None:
        """Slack renders the message in a command's ack body like a response_url post (slack.md §3.5);
        an invalid one never reaches the user. What Slack then shows is undocumented: the fake records
        the refusal, which fails the test (stricter)."""
        body = json.loads(text) if text else {}
        if isinstance(body, dict) and "blocks" in body:
            self._refused("ack", blockkit.message_errors(body["blocks"], self._slack_file_problem))

    def command_payload(
        self,
        text: str,
        *,
        user_id: str = "U1",
        user_name: str = "alice",
        channel_id: str = "C1",
        channel_name: str = "general",
        command: str = "/imagine",
        trigger_id: str | None = None,
    ) -> dict[str, str]:
        """The fields of a slash command invocation (payloads/slash_command.json)."""
        payload: dict[str, str] = example("slash_command")
        payload.update(
            team_id=self.team_id,
            channel_id=channel_id,
            channel_name=channel_name,
            user_id=user_id,
            user_name=user_name,
            command=command,
            text=text,
            response_url=self.new_response_url(),
            trigger_id=self._issue_trigger(trigger_id),
        )
        return payload

    async def send_command(self, events_url: str, text: str, **fields: Any) -> SignedResponse:
        """Invoke `/imagine <text>` (form-encoded, signed)."""
        return await self.send_command_payload(events_url, self.command_payload(text, **fields))

    async def send_command_payload(self, events_url: str, payload: dict[str, str]) -> SignedResponse:
        """Send a prepared command payload (again, to simulate a duplicate delivery)."""
        return await self.post_signed(
            events_url, urlencode(payload), content_type="application/x-www-form-urlencoded"
        )

    def event_envelope(self, event: dict[str, Any], *, event_id: str | None = None) -> dict[str, Any]:
        """An Events API `event_callback` body around `event` (payloads/event_callback.json)."""
        envelope = example("event_callback")
        envelope.update(
            team_id=self.team_id,
            event=event,
            event_id=event_id or f"Ev{uuid.uuid4().hex[:10].upper()}",
            event_time=int(time.time()),
        )
        envelope["authorizations"][0].update(team_id=self.team_id, user_id=self.bot_user_id)
        return envelope

    async def send_event(
        self,
        events_url: str,
        event: dict[str, Any],
        *,
        event_id: str | None = None,
        retry_num: int | None = None,
    ) -> SignedResponse:
        """Deliver an event (JSON, signed). Raises NotDeliveredError for an event Slack would not send: one
        from a conversation the bot is not in (see `_check_deliverable`)."""
        self._check_deliverable(event)
        body = json.dumps(self.event_envelope(event, event_id=event_id))
        return await self.post_signed(events_url, body, content_type="application/json", retry_num=retry_num)

    def button_payload(
        self, button: dict[str, Any], *, user_id: str, channel_id: str, message: dict[str, Any]
    ) -> dict[str, Any]:
        """A `block_actions` payload for a click on `button` (a Block Kit element) in `message`
        (payloads/block_actions.json); `block_id` is that of the block holding the button."""
        payload = example("block_actions")
        user = {"id": user_id, "username": user_id.lower(), "name": user_id.lower(), "team_id": self.team_id}
        payload.update(user=user, trigger_id=self._issue_trigger(), message=message)
        payload["team"]["id"] = self.team_id
        payload["container"].update(message_ts=message["ts"], channel_id=channel_id)
        payload["channel"]["id"] = channel_id
        payload["response_url"] = self.new_response_url()
        holder = next(
            (b for b in message.get("blocks") or [] if button in (b.get("elements") or [])), {"block_id": ""}
        )
        action = payload["actions"][0]
        action.update(
            action_id=button["action_id"],
            block_id=holder.get("block_id", ""),
            # Slack echoes the button's text with `emoji` set (true unless the element said otherwise).
            text={"emoji": True, **button["text"]},
            value=button.get("value", ""),
            type=button.get("type", "button"),
            action_ts=f"{time.time():.6f}",
        )
        return payload

    def view_submission_payload(
        self, view: dict[str, Any], values: dict[str, dict[str, Any]], *, user_id: str
    ) -> dict[str, Any]:
        """A `view_submission` payload for `view` (as opened) with the given state values
        (payloads/view_submission.json)."""
        payload = example("view_submission")
        user = {"id": user_id, "username": user_id.lower(), "name": user_id.lower(), "team_id": self.team_id}
        payload.update(user=user, trigger_id=self._issue_trigger())
        payload["team"]["id"] = self.team_id
        submitted = payload["view"]
        submitted.update(view)
        submitted.update(
            id="V0EDIT",
            team_id=self.team_id,
            root_view_id="V0EDIT",
            app_installed_team_id=self.team_id,
            bot_id=self.bot_id,
            state={"values": values},
        )
        return payload

    def reaction_event(
        self,
        reaction: str,
        *,
        user: str,
        channel: str,
        ts: str,
        item_user: str | None = None,
        removed: bool = False,
    ) -> dict[str, Any]:
        """A `reaction_added` (or, with `removed`, `reaction_removed`) event on the message `channel`/`ts`
        (payloads/reaction_added.json, payloads/reaction_removed.json)."""
        event = example("reaction_removed" if removed else "reaction_added")
        event.update(user=user, reaction=reaction, item_user=item_user or self.bot_user_id)
        event["item"].update(channel=channel, ts=ts, channel_type=_channel_type(channel))
        event["event_ts"] = f"{time.time():.6f}"
        return event

    def message(self, channel: str, ts: str) -> dict[str, Any]:
        """One stored message."""
        found = self._find(channel, ts)
        assert found is not None, f"no message {ts} in {channel}"
        return found

    async def send_action(self, events_url: str, payload: dict[str, Any]) -> SignedResponse:
        """Deliver an interactive payload (block_actions, view_submission)."""
        body = urlencode({"payload": json.dumps(payload)})
        return await self.post_signed(events_url, body, content_type="application/x-www-form-urlencoded")

    # -- Socket Mode -----------------------------------------------------------------------------

    def socket_connected(self) -> bool:
        """Whether a Socket Mode client is connected."""
        return self.socket_connections() > 0

    def socket_connections(self) -> int:
        """How many Socket Mode connections are open (one per running bot in Socket Mode)."""
        return len(self._open_sockets())

    def _open_sockets(self) -> list[int]:
        """Indexes of the open connections, in connection order."""
        return [index for index in sorted(self._connected) if not self._sockets[index].closed]

    async def wait_socket_connected(self, timeout: float = 5.0) -> None:
        """Wait until a Socket Mode client has connected."""
        await self.recorder.wait_until(self.socket_connected, timeout=timeout)

    async def socket_send(
        self,
        envelope_type: str,
        payload: dict[str, Any],
        *,
        accepts_response_payload: bool,
        timeout: float = 5.0,
    ) -> dict[str, Any]:
        """Send an envelope over the socket and return the client's ack (events from conversations the bot
        is not in are refused as in `send_event`; the ack's delay is recorded as for `post_signed`)."""
        if envelope_type == "events_api":
            self._check_deliverable(payload.get("event") or {})
        # An app may hold several Socket Mode connections at once (about 10 at most, slack.md §1.7), and
        # Slack sends each envelope to only one of them, a random one (a Slack maintainer in
        # bolt-python#448: "the Slack API server will send each event to only 1 random connection";
        # bolt-python#1071: it "delivers to any of the active connections"). So does the fake, with one
        # bot connected always the same one.
        open_sockets = self._open_sockets()
        if not open_sockets:
            raise ConnectionError("no Socket Mode connection is open")
        index = self.socket_choice.choice(open_sockets)
        ws = self._sockets[index]
        self.socket_deliveries.append(index)
        envelope_id = str(uuid.uuid4())
        acked = asyncio.get_running_loop().create_future()
        self._acks[envelope_id] = acked
        await ws.send_json(
            {
                "envelope_id": envelope_id,
                "type": envelope_type,
                "accepts_response_payload": accepts_response_payload,
                "payload": payload,
                "retry_attempt": 0,
                "retry_reason": "",
            }
        )
        started = self.clock()
        answer: dict[str, Any] = await asyncio.wait_for(acked, timeout)
        kind = "command" if envelope_type == "slash_commands" else str(payload.get("type") or envelope_type)
        self.signed.append(SignedRequest(kind, 200, self.clock() - started))
        return answer

    def _check_deliverable(self, event: dict[str, Any]) -> None:
        """Slack sends a bot the events of conversations it is a member of: message.* events need the
        history scope of "channels your Slack app has been added to" (docs.slack.dev/reference/scopes/
        channels.history), reactions arrive "only in conversations the bot is in" (slack.md §3.3), and
        `chat:write.public` lets the bot post into a channel without joining it but adds no event
        (https://docs.slack.dev/reference/scopes/chat.write.public names only chat.postMessage). Events
        about the bot's own membership are exempt."""
        if event.get("type") in OWN_MEMBERSHIP_EVENTS:
            return
        channel_id = event.get("channel") or (event.get("item") or {}).get("channel")
        if not isinstance(channel_id, str):
            return
        channel = self.channel(channel_id)
        if channel is None or not channel.member:
            raise NotDeliveredError(
                f"Slack sends no {event.get('type')} event from {channel_id}: the bot is not a member"
            )

    async def _socket(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(autoping=True)
        await ws.prepare(request)
        index = len(self._sockets)
        self._sockets.append(ws)
        self._connected.add(index)
        try:
            await ws.send_json(
                {
                    "type": "hello",
                    "num_connections": self.socket_connections(),
                    "debug_info": {"host": "fake", "approximate_connection_time": 3600},
                    "connection_info": {"app_id": "A0APP"},
                }
            )
            await self.recorder.notify()
            async for message in ws:
                if message.type is not aiohttp.WSMsgType.TEXT:
                    continue
                data = json.loads(message.data)
                self._guard_broadcasts("socket mode ack", data)
                future = self._acks.pop(str(data.get("envelope_id")), None)
                if future is not None and not future.done():
                    future.set_result(data)
        finally:
            # A client that vanished (its process killed: the TCP connection ends without a close frame)
            # ends this handler by cancellation (handler_cancellation), and aiohttp never marks the
            # WebSocket closed; it is gone all the same, and Slack sends envelopes only to the app's
            # active connections (slack.md §1.7; bolt-python#1071: "any of the active connections").
            self._connected.discard(index)
            await self.recorder.notify()
        return ws

    # -- HTTP handlers ---------------------------------------------------------------------------

    async def _api(self, request: web.Request) -> web.StreamResponse:
        method = request.match_info["method"]
        params: dict[str, Any] = dict(request.query)
        if request.can_read_body:
            if request.content_type == "application/json":
                params.update(await request.json())
            else:
                params.update(
                    {key: value for key, value in (await request.post()).items() if isinstance(value, str)}
                )
        headers = {key.lower(): value for key, value in request.headers.items()}
        self._guard_broadcasts(method, params)
        await self.recorder.record(Call(method, params, headers))
        fault = take_fault(self._faults, method)
        if fault is not None and not fault.after:
            answer = await self._fault_answer(request, fault)
            if answer is not None:
                return answer
        token = headers.get("authorization", "").removeprefix("Bearer ") or str(params.get("token", ""))
        expected = self.app_token if method == "apps.connections.open" else self.bot_token
        if token != expected:
            return web.json_response({"ok": False, "error": "invalid_auth"})
        handler = getattr(self, "_m_" + method.replace(".", "_"), None)
        if handler is None:
            return web.json_response({"ok": False, "error": "unknown_method"})
        needed = METHOD_SCOPES.get(method, frozenset())
        if needed and not needed & self.scopes:
            refusal = {"ok": False, "error": "missing_scope", "needed": ",".join(sorted(needed))}
            return web.json_response({**refusal, "provided": ",".join(sorted(self.scopes))})
        retry_after = self.rate_limits.check(method, params)
        if retry_after is not None:
            limited = {"ok": False, "error": "ratelimited"}
            return web.json_response(limited, status=429, headers={"Retry-After": str(retry_after)})
        result: dict[str, Any] = handler(params)
        if fault is not None and fault.after:
            answer = await self._fault_answer(request, fault)
            if answer is not None:
                return answer
        return web.json_response(result)

    async def _scope_header(self, request: web.Request, response: web.StreamResponse) -> None:
        """Every Web API answer names the token's scopes in `X-OAuth-Scopes`, failed calls included
        (https://api.slack.com/legacy/oauth-scopes "Working with scopes", as relied on by zulip/zulip#16788;
        comma-separated, node-slack-sdk#292 shows `files:read, chat:write:bot`)."""
        if request.path.startswith("/api/") and request.match_info.get("method") != "apps.connections.open":
            response.headers["X-OAuth-Scopes"] = ", ".join(sorted(self.scopes))

    async def _fault_answer(self, request: web.Request, fault: Fault) -> web.StreamResponse | None:
        """What a fault answers; None means "go on with the real answer"."""
        if fault.delay:
            await asyncio.sleep(fault.delay)
        if fault.drop:
            return drop_connection(request)
        extra = {"Retry-After": str(fault.retry_after)} if fault.retry_after is not None else {}
        upload = request.path.startswith("/upload/")
        if fault.status == 429:
            # slack.md §4: a 429 carries Retry-After; the Web API body is `ratelimited` (python-slack-sdk's
            # test server, slack.md §7.2). The upload host's 429 body is undocumented: the fake answers
            # text/plain, like that host's "OK - <size>" success body.
            if upload:
                return web.Response(text="ratelimited", status=429, headers=extra)
            return web.json_response({"ok": False, "error": "ratelimited"}, status=429, headers=extra)
        if fault.status is not None:
            return web.Response(
                text=SERVER_ERROR_PAGE, status=fault.status, content_type="text/html", headers=extra
            )
        if fault.error is not None:
            return web.json_response({"ok": False, "error": fault.error})
        return None

    async def _upload(self, request: web.Request) -> web.StreamResponse:
        """The upload URL (slack.md §2.1 step 2): the bytes, as the body or as a multipart part."""
        file = self.uploaded_files.get(request.match_info["file_id"])
        content = bytearray()
        size = 0
        if request.content_type.startswith("multipart/"):
            reader = await request.multipart()
            part = await reader.next()
            content += await part.read() if isinstance(part, aiohttp.BodyPartReader) else b""
            size = len(content)
        else:
            async for chunk in request.content.iter_chunked(1 << 20):
                size += len(chunk)
                if self.keep_uploads:
                    content += chunk
        await self.recorder.record(Call("upload", {"file_id": request.match_info["file_id"], "size": size}))
        fault = take_fault(self._faults, "upload")
        if fault is not None and not fault.after:
            answer = await self._fault_answer(request, fault)
            if answer is not None:
                return answer
        # Posting to the same upload URL twice is undocumented. The fake treats the URL as single-use (the
        # stricter choice): once bytes were accepted it answers like an unknown URL, 404, so a client that
        # lost the first answer must get a fresh URL, or complete the upload it already made.
        if file is None or file.uploaded:
            return web.Response(status=404, text="Not Found")
        file.content = bytes(content)
        file.length = size
        file.uploaded = True
        response = web.Response(text=f"OK - {size}")
        if fault is not None and fault.after:
            answer = await self._fault_answer(request, fault)
            if answer is not None:
                return answer
        return response

    async def _download(self, request: web.Request) -> web.Response:
        path = request.match_info["path"]
        authorization = request.headers.get("Authorization")
        host = request.url.host
        await self.recorder.record(
            Call("file_download", {"path": path, "authorization": authorization, "host": host})
        )
        origin = request.path.startswith("/files-origin/")
        if origin != (host == self.origin_host and self._file_redirect == "origin"):
            return web.Response(status=404, text="Not Found")
        if not origin and self._file_redirect is not None:
            target = self._file_redirect if self._file_redirect != "origin" else self.origin_host
            location = (
                f"https://{target}"
                if "?" in target
                else str(request.url.with_host(target).with_path(f"/files-origin/{path}"))
            )
            # Grid's 302 carries a small HTML body ("Found"), like the sign-in redirect (slack.md §2.3).
            raise web.HTTPFound(location, text="Found", content_type="text/html")
        file_id = path.split("/")[0].split("-")[-1]
        file = self.uploaded_files.get(file_id)
        if file is None or authorization != f"Bearer {self.bot_token}" or file_id in self._html_instead:
            return web.Response(text=SIGN_IN_PAGE, content_type="text/html")
        return web.Response(body=file.content, content_type=file.mimetype)

    async def _response_url(self, request: web.Request) -> web.StreamResponse:
        body = await request.json()
        self._guard_broadcasts("response_url", body)
        await self.recorder.record(Call("response_url", body, path=request.path))
        fault = take_fault(self._faults, "response_url")
        if fault is not None:
            answer = await self._fault_answer(request, fault)
            if answer is not None:
                return answer
        errors = blockkit.message_errors(body.get("blocks"), self._slack_file_problem)
        if self._refused("response_url", errors):
            # A response_url post with a slack_file Slack cannot show yet is answered HTTP 404 with
            # `{"ok":false,"error":"invalid_blocks"}` (java-slack-sdk#1349, the WebhookResponse it logged).
            return web.json_response({"ok": False, "error": "invalid_blocks"}, status=404)
        return web.Response(text="ok")

    def _refused(self, surface: str, errors: list[str]) -> bool:
        """Record a refusal when `errors` is not empty; whether the payload was refused."""
        if errors:
            self.rejections.append(Rejection(surface, errors))
        return bool(errors)

    def _refuse_blocks(self, method: str, params: dict[str, Any]) -> dict[str, Any] | None:
        """chat.*'s answer to invalid `blocks` (blockkit.invalid_blocks), or None when they are valid."""
        errors = blockkit.message_errors(params.get("blocks"), self._slack_file_problem)
        return blockkit.invalid_blocks(errors) if self._refused(method, errors) else None

    def _slack_file_problem(self, ref: Mapping[str, Any]) -> str | None:
        """Why an image block cannot show this `slack_file` ({"id": F…} or {"url": url_private or
        permalink}): unknown, deleted or not yet processed files all answer "invalid slack file"
        (python-slack-sdk#1658, bolt-python#1251)."""
        file_id = ref.get("id")
        if file_id is None:
            url = str(ref.get("url", ""))
            file_id = next((f.id for f in self.uploaded_files.values() if url in self._file_urls(f)), None)
        file = self.uploaded_files.get(str(file_id))
        if file is None or file.completed_at is None:
            return "invalid slack file"
        if time.monotonic() - file.completed_at < self.file_processing_delay:
            return "invalid slack file"
        return None

    def _file_urls(self, file: FakeFile) -> tuple[str, str]:
        shown = self._file_object(file)
        return str(shown["url_private"]), str(shown["permalink"])

    # -- Web API methods -------------------------------------------------------------------------

    def _next_ts(self) -> str:
        # "ts is the unique (per-channel) timestamp" of the message (api.slack.com/events/message, as
        # quoted in ltworf/localslackirc#118): Unix time with microseconds. conversations.history's
        # `oldest`/`latest` compare against it, so the fake uses real time, strictly increasing.
        self._last_ts = max(time.time(), self._last_ts + 0.000001)
        return f"{self._last_ts:.6f}"

    def _file_id(self) -> str:
        return f"F{next(self._ids):010d}"

    def _find(self, channel: str, ts: str) -> dict[str, Any] | None:
        return next((m for m in self._messages.get(channel, []) if m["ts"] == ts), None)

    def _post(self, channel: str, message: dict[str, Any]) -> dict[str, Any]:
        stored = {
            "type": "message",
            "user": self.bot_user_id,
            "bot_id": self.bot_id,
            "ts": self._next_ts(),
            **message,
        }
        self._messages.setdefault(channel, []).append(stored)
        return stored

    def _m_auth_test(self, _: dict[str, Any]) -> dict[str, Any]:
        return {
            "ok": True,
            "url": "https://dreamteam.slack.com/",
            "team": "Dream Team",
            "user": "dreamboard",
            "team_id": self.team_id,
            "user_id": self.bot_user_id,
            "bot_id": self.bot_id,
            "is_enterprise_install": False,
        }

    def _m_chat_postMessage(self, params: dict[str, Any]) -> dict[str, Any]:
        channel = str(params.get("channel", ""))
        if channel.startswith(("U", "W")):
            channel = f"D{channel}"  # posting to a user id lands in the app's DM with them
        refused = self._write_refusal(channel, public_write=True)
        if refused:
            return {"ok": False, "error": refused}
        if not params.get("text") and not params.get("blocks"):
            return {"ok": False, "error": "no_text"}
        if (invalid := self._refuse_blocks("chat.postMessage", params)) is not None:
            return invalid
        metadata: dict[str, Any] | None = None
        if "metadata" in params:
            metadata = _metadata(params["metadata"])
            if metadata is None:
                return {"ok": False, "error": "invalid_metadata_format"}
        message = {"text": params.get("text", ""), "blocks": _json(params.get("blocks"))}
        if params.get("thread_ts"):
            message["thread_ts"] = params["thread_ts"]
        if metadata is not None:
            message["metadata"] = metadata
        stored = self._post(channel, message)
        # Whether the answer's `message` echoes the metadata is undocumented: the fake leaves it out
        # (stricter), so only conversations.* with include_all_metadata shows it.
        return {"ok": True, "channel": channel, "ts": stored["ts"], "message": _visible(stored, False)}

    def _m_chat_update(self, params: dict[str, Any]) -> dict[str, Any]:
        # chat.update documents no not_in_channel (the bot edits its own messages), but "is_inactive: The
        # message cannot be edited within a frozen, archived or deleted channel" (its error list, mirrored
        # in slack-ruby/slack-api-ref methods/chat/chat.update.json).
        channel = self.channel(str(params.get("channel")))
        if channel is None:
            return {"ok": False, "error": "channel_not_found"}
        if channel.archived:
            return {"ok": False, "error": "is_inactive"}
        message = self._find(str(params.get("channel")), str(params.get("ts")))
        if message is None:
            return {"ok": False, "error": "message_not_found"}
        if (refused := self._refuse_blocks("chat.update", params)) is not None:
            return refused
        # chat.update `metadata` (docs.slack.dev/reference/methods/chat.update, mirrored by
        # slack-ruby/slack-api-ref): "If you don't include this field, the message's previous metadata will
        # be retained. To remove previous metadata, include an empty object for this field."
        if "metadata" in params:
            if _json(params["metadata"]) == {}:
                message.pop("metadata", None)
            else:
                metadata = _metadata(params["metadata"])
                if metadata is None:
                    return {"ok": False, "error": "invalid_metadata_format"}
                message["metadata"] = metadata
        message.update(text=params.get("text", ""), blocks=_json(params.get("blocks")))
        return {"ok": True, "channel": params["channel"], "ts": params["ts"], "text": message["text"]}

    def _m_chat_postEphemeral(self, params: dict[str, Any]) -> dict[str, Any]:
        refused = self._write_refusal(str(params.get("channel", "")), public_write=False)
        if refused:
            return {"ok": False, "error": refused}
        if (invalid := self._refuse_blocks("chat.postEphemeral", params)) is not None:
            return invalid
        return {"ok": True, "message_ts": self._next_ts()}

    def _m_chat_delete(self, params: dict[str, Any]) -> dict[str, Any]:
        channel = str(params.get("channel"))
        message = self._find(channel, str(params.get("ts")))
        if message is None:
            return {"ok": False, "error": "message_not_found"}
        self._messages[channel].remove(message)
        return {"ok": True, "channel": channel, "ts": params["ts"]}

    def _m_chat_getPermalink(self, params: dict[str, Any]) -> dict[str, Any]:
        channel, ts = str(params.get("channel")), str(params.get("message_ts"))
        return {
            "ok": True,
            "channel": channel,
            "permalink": f"https://fake.slack.com/archives/{channel}/p{ts.replace('.', '')}",
        }

    def _m_reactions_add(self, params: dict[str, Any]) -> dict[str, Any]:
        message = self._find(str(params.get("channel")), str(params.get("timestamp")))
        if message is None:
            return {"ok": False, "error": "message_not_found"}
        message.setdefault("reactions", []).append(
            {"name": params.get("name"), "users": [self.bot_user_id], "count": 1}
        )
        return {"ok": True}

    def _m_reactions_get(self, params: dict[str, Any]) -> dict[str, Any]:
        channel = str(params.get("channel"))
        message = self._find(channel, str(params.get("timestamp")))
        if message is None:
            return {"ok": False, "error": "message_not_found"}
        # reactions.get takes no include_all_metadata; the fake never shows metadata here (stricter).
        return {"ok": True, "type": "message", "channel": channel, "message": _visible(message, False)}

    def _m_files_info(self, params: dict[str, Any]) -> dict[str, Any]:
        file = self.uploaded_files.get(str(params.get("file")))
        # A file reserved with getUploadURLExternal but never completed does not exist for the rest of
        # the API: slack.md §2.1 is silent, issue 10 measured `file_not_found`; the stricter answer.
        if file is None or not file.completed:
            return {"ok": False, "error": "file_not_found"}
        return {"ok": True, "file": self._file_object(file)}

    def _m_files_delete(self, params: dict[str, Any]) -> dict[str, Any]:
        file = self.uploaded_files.pop(str(params.get("file")), None)
        if file is None:
            return {"ok": False, "error": "file_not_found"}
        for messages in self._messages.values():
            for message in messages:
                if file.id in message.get("files", []):
                    message["files"] = [f for f in message["files"] if f != file.id]
        self.deleted_files.append(file.id)
        return {"ok": True}

    def _m_files_getUploadURLExternal(self, params: dict[str, Any]) -> dict[str, Any]:
        try:
            length = int(params["length"])
        except (KeyError, ValueError):
            return {"ok": False, "error": "invalid_arguments"}
        if not params.get("filename"):
            return {"ok": False, "error": "invalid_arguments"}
        if len(str(params.get("alt_txt", ""))) > 1000:
            return {"ok": False, "error": "alt_txt_too_large"}
        file = FakeFile(id=self._file_id(), filename=str(params["filename"]), length=length)
        self.uploaded_files[file.id] = file
        return {"ok": True, "upload_url": f"{self.url}/upload/{file.id}", "file_id": file.id}

    def _m_files_completeUploadExternal(self, params: dict[str, Any]) -> dict[str, Any]:
        entries = json.loads(str(params.get("files", "[]")))
        channel = params.get("channel_id")
        refused = self._write_refusal(str(channel), public_write=False) if channel else None
        if refused:
            return {"ok": False, "error": refused}
        files = [self.uploaded_files.get(str(entry.get("id"))) for entry in entries]
        if not entries or any(file is None or not file.uploaded for file in files):
            return {"ok": False, "error": "file_not_found"}
        shared = [file for file in files if file is not None]
        for file, entry in zip(shared, entries, strict=True):
            file.completed = True
            file.completed_at = time.monotonic()
            file.title = str(entry.get("title") or file.filename)
            file.user = self.bot_user_id
        if channel:
            for file in shared:
                file.scanned = False
            task = asyncio.get_running_loop().create_task(
                self._share_later(
                    shared,
                    channel=str(channel),
                    thread_ts=str(params["thread_ts"]) if params.get("thread_ts") else None,
                    comment=str(params.get("initial_comment", "")),
                )
            )
            self._sharing.add(task)
            task.add_done_callback(self._sharing.discard)
        # The answer describes the files as they are now: not shared yet, mimetype "" (python-slack-sdk#1590's
        # response body), and no message ts (python-slack-sdk#1363).
        return {"ok": True, "files": [self._file_object(f) for f in shared]}

    async def _share_later(
        self, files: list[FakeFile], *, channel: str, thread_ts: str | None, comment: str
    ) -> None:
        """After `share_delay`: the upload message appears in the conversation, `shares` and the mimetype
        appear in files.info, and the bot's own file_share message event is delivered (slack.md §2.2)."""
        await asyncio.sleep(self.share_delay)
        message: dict[str, Any] = {"text": comment, "files": [f.id for f in files]}
        if thread_ts:
            message["thread_ts"] = thread_ts
        stored = self._post(channel, message)
        share = {"ts": stored["ts"], **({"thread_ts": thread_ts} if thread_ts else {})}
        for file in files:
            file.channel, file.thread_ts = channel, thread_ts
            file.mimetype = MIMETYPES.get(
                file.filename.rsplit(".", 1)[-1].lower(), "application/octet-stream"
            )
            file.scanned = True
            file.shares = {"public": {channel: [share]}}
        await self._deliver(self._file_share_event(files, channel=channel, stored=stored))
        task = asyncio.current_task()
        if task is not None:
            self._sharing.discard(task)
        await self.recorder.notify()

    def _file_share_event(
        self, files: list[FakeFile], *, channel: str, stored: dict[str, Any]
    ) -> dict[str, Any]:
        """The bot's own file_share message event, from the documented fixture (payloads/)."""
        event: dict[str, Any] = example("bot_upload_file_share")["event"]
        event.update(text=stored["text"], user=self.bot_user_id, ts=stored["ts"], event_ts=stored["ts"])
        event["channel"] = channel
        event["channel_type"] = "im" if channel.startswith("D") else "channel"
        if stored.get("thread_ts"):
            event["thread_ts"] = stored["thread_ts"]
        event["files"] = [self._event_file(file) for file in files]
        return event

    def _event_file(self, file: FakeFile) -> dict[str, Any]:
        if self.event_files == "stub":
            stub: dict[str, Any] = example("bot_upload_file_share")["file_stub"]
            return {**stub, "id": file.id}
        template: dict[str, Any] = example("bot_upload_file_share")["file"]
        full = self._file_object(file)
        return {**template, **{key: full[key] for key in template if key in full}, "size": full["size"]}

    async def _deliver(self, event: dict[str, Any]) -> None:
        """Send an event to the bot as Slack does: over the Socket Mode connection when one is open, else a
        signed JSON POST to `events_url`. A delivery that fails is not retried: Slack retries up to 3 times
        over about 5 minutes (slack.md §1.5), which no test waits for, so the fake drops it (stricter)."""
        record: dict[str, Any] = {"event": event, "via": None, "status": None}
        self.delivered_events.append(record)
        if self.socket_connected():
            record["via"] = "socket"
            try:
                await self.socket_send(
                    "events_api", self.event_envelope(event), accepts_response_payload=False
                )
                record["status"] = 200
            except (TimeoutError, ConnectionError, RuntimeError):
                record["status"] = 0
            return
        if self.events_url is None:
            return
        record["via"] = "http"
        try:
            answer = await self.send_event(self.events_url, event)
            record["status"] = answer.status
        except (aiohttp.ClientError, TimeoutError):
            record["status"] = 0

    def _m_views_open(self, params: dict[str, Any]) -> dict[str, Any]:
        trigger = str(params.get("trigger_id", ""))
        issued = self._triggers.get(trigger)
        if issued is None:
            # An id Slack never issued: views.open's documented example answer (slack-ruby/slack-api-ref
            # methods/views/views.open.json).
            return {
                "ok": False,
                "error": "invalid_arguments",
                "response_metadata": {"messages": ["invalid `trigger_id`"]},
            }
        if trigger in self._exchanged:
            return {"ok": False, "error": "exchanged_trigger_id"}
        if self.clock() - issued > TRIGGER_LIFETIME:
            return {"ok": False, "error": "expired_trigger_id"}
        # Whether a views.open refused for its view still uses up the trigger is undocumented: the fake
        # counts every attempt with a live trigger as its one exchange (stricter).
        self._exchanged.add(trigger)
        return self._view("views.open", params)

    def _m_views_publish(self, params: dict[str, Any]) -> dict[str, Any]:
        return self._view("views.publish", params)

    def _m_views_update(self, params: dict[str, Any]) -> dict[str, Any]:
        return self._view("views.update", params)

    def _view(self, method: str, params: dict[str, Any]) -> dict[str, Any]:
        view = _json(params.get("view")) or {}
        errors = blockkit.view_errors(view, self._slack_file_problem)
        if self._refused(method, errors):
            return blockkit.invalid_arguments(errors)
        return {"ok": True, "view": {"id": f"V{next(self._ids):08d}", **view}}

    def _m_users_info(self, params: dict[str, Any]) -> dict[str, Any]:
        """A user object with its time zone: `tz` (IANA name), `tz_label` and `tz_offset` (seconds east
        of UTC, the zone's current offset), as the user type documents them
        (https://apis.io/schemas/slack/slack-web-user/, Slack's published OpenAPI user schema)."""
        user = str(params.get("user"))
        name = user.lower()
        zone = self.user_zones.get(user, DEFAULT_ZONE)
        now = datetime.now(ZoneInfo(zone))
        offset = now.utcoffset()
        return {
            "ok": True,
            "user": {
                "id": user,
                "team_id": self.team_id,
                "name": name,
                "real_name": name.title(),
                "is_admin": user in self.admins,
                "tz": zone,
                "tz_label": now.tzname() or zone,
                "tz_offset": int(offset.total_seconds()) if offset is not None else 0,
                "profile": {"display_name": name},
            },
        }

    def _m_conversations_replies(self, params: dict[str, Any]) -> dict[str, Any]:
        channel, ts = str(params.get("channel")), str(params.get("ts"))
        refused = self._read_refusal(channel)
        if refused:
            return {"ok": False, "error": refused}
        thread = [m for m in self._messages.get(channel, []) if m["ts"] == ts or m.get("thread_ts") == ts]
        if not thread:
            return {"ok": False, "error": "thread_not_found"}
        start = int(params.get("cursor") or 0)
        end = start + min(int(params.get("limit") or 1000), 1000)
        shown = [_visible(m, _flag(params.get("include_all_metadata"))) for m in thread[start:end]]
        page: dict[str, Any] = {"ok": True, "messages": shown, "has_more": end < len(thread)}
        if end < len(thread):
            page["response_metadata"] = {"next_cursor": str(end)}
        return page

    def _m_conversations_history(self, params: dict[str, Any]) -> dict[str, Any]:
        """Top-level messages (thread roots included, replies not), newest first, paged by `limit` (default
        100, at most 999) and `cursor`, bounded by `latest`/`oldest` (exclusive unless `inclusive`), with
        metadata only under include_all_metadata (https://docs.slack.dev/reference/methods/conversations.history;
        slack.md §3.4)."""
        channel = str(params.get("channel"))
        refused = self._read_refusal(channel)
        if refused:
            return {"ok": False, "error": refused}
        inclusive = _flag(params.get("inclusive"))
        latest, oldest = params.get("latest"), params.get("oldest")

        def in_range(ts: str) -> bool:
            if latest and not (float(ts) < float(latest) or (inclusive and ts == latest)):
                return False
            return not oldest or float(ts) > float(oldest) or (inclusive and ts == oldest)

        roots = [
            m
            for m in reversed(self._messages.get(channel, []))
            if m.get("thread_ts", m["ts"]) == m["ts"] and in_range(m["ts"])
        ]
        start = int(params.get("cursor") or 0)
        end = start + min(int(params.get("limit") or 100), 999)
        shown = [_visible(m, _flag(params.get("include_all_metadata"))) for m in roots[start:end]]
        page: dict[str, Any] = {"ok": True, "messages": shown, "has_more": end < len(roots), "pin_count": 0}
        if end < len(roots):
            page["response_metadata"] = {"next_cursor": str(end)}
        return page

    def _m_conversations_info(self, params: dict[str, Any]) -> dict[str, Any]:
        """A conversation object (https://docs.slack.dev/reference/methods/conversations.info): public
        channels are visible to any token with channels:read, private ones only to members
        (`channel_not_found` otherwise)."""
        channel_id = str(params.get("channel"))
        channel = self.channel(channel_id)
        if channel is None or (channel.private and not channel.member):
            return {"ok": False, "error": "channel_not_found"}
        return {
            "ok": True,
            "channel": {
                "id": channel.id,
                "is_channel": not channel.private,
                "is_group": channel.private,
                "is_private": channel.private,
                "is_archived": channel.archived,
                "is_member": channel.member,
            },
        }

    def _write_refusal(self, channel_id: str, *, public_write: bool) -> str | None:
        """The error Slack answers when the bot writes into `channel_id`, or None.

        Private channels and DMs without the bot are `channel_not_found` and public ones `not_in_channel`
        (slack.md §3.5, "Bot not in the channel"). `chat:write.public` lets chat.postMessage (only:
        `public_write`) post into a public channel the bot has not joined
        (https://docs.slack.dev/reference/scopes/chat.write.public); file shares still need membership
        (slack.md §2.1), and so do ephemeral messages (§3.5). An archived channel answers `is_archived`
        (the error lists of chat.postMessage and chat.postEphemeral; files.completeUploadExternal's list is
        silent, so the fake refuses the same way, the stricter choice)."""
        channel = self.channel(channel_id)
        if channel is None or (channel.private and not channel.member):
            return "channel_not_found"
        if channel.archived:
            return "is_archived"
        if channel.member or (public_write and "chat:write.public" in self.scopes):
            return None
        return "not_in_channel"

    def _read_refusal(self, channel_id: str) -> str | None:
        """conversations.history/replies with a bot token read "channels your Slack app has been added to"
        (docs.slack.dev/reference/scopes/channels.history); archived channels stay readable. A public
        channel without the bot answers `not_in_channel` (apps handle it so, e.g. simstudioai/sim#1990;
        the method's documented list only has `channel_not_found`, the fake takes the more specific one)."""
        channel = self.channel(channel_id)
        if channel is None or (channel.private and not channel.member):
            return "channel_not_found"
        return None if channel.member else "not_in_channel"

    def _m_apps_connections_open(self, _: dict[str, Any]) -> dict[str, Any]:
        return {"ok": True, "url": self.url.replace("http://", "ws://") + "/socket-mode"}

    def _file_object(self, file: FakeFile) -> dict[str, Any]:
        private = f"{self.url}/files-pri/{self.team_id}-{file.id}/{file.filename}"
        return {
            "id": file.id,
            "name": file.filename,
            "title": file.title or file.filename,
            "mimetype": file.mimetype if file.scanned else "",
            "filetype": file.filename.rsplit(".", 1)[-1] if file.scanned else "",
            "pretty_type": file.mimetype.split("/")[-1].upper() if file.scanned else "",
            "user": file.user,
            "size": len(file.content) or file.length,
            "mode": "hosted",
            "url_private": private,
            "url_private_download": private + "?download=1",
            "permalink": f"https://fake.slack.com/files/{file.user}/{file.id}/{file.filename}",
            "shares": file.shares,
        }


def _request_kind(body: str, content_type: str) -> str:
    """What a signed request carries: "command", an interaction payload's type, or "event"."""
    if content_type == "application/json":
        return "event"
    form = parse_qs(body)
    if "command" in form:
        return "command"
    try:
        return str(json.loads(form["payload"][0]).get("type"))
    except (KeyError, ValueError, AttributeError):
        return "unknown"


def _json(value: Any) -> Any:
    return json.loads(value) if isinstance(value, str) and value else value


def _flag(value: Any) -> bool:
    """A boolean argument as Slack reads it: JSON true, or "true"/"1" in a form or query (slack_sdk sends
    Python booleans in GET queries as "1")."""
    return value is True or str(value).lower() in TRUE_VALUES


def _metadata(value: Any) -> dict[str, Any] | None:
    """Message metadata (https://docs.slack.dev/messaging/message-metadata): an object with a string
    `event_type` and an object `event_payload`, sent as a JSON object (slack_sdk's JSON body) or a
    JSON-encoded string (a form body). None when malformed; Slack documents `invalid_metadata_format`
    ("Invalid metadata format provided") in the error lists of chat.postMessage and chat.update. Stricter
    than Slack where its docs are silent: an empty `event_type`, an empty object on chat.postMessage, and
    keys other than those two (Slack also takes `entities` for Work Objects) are refused.
    `invalid_metadata_schema` (a payload that breaks a manifest-declared event schema) and
    `metadata_too_large` (no size is documented) are not modelled."""
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError:
            return None
    if not isinstance(value, dict) or set(value) != {"event_type", "event_payload"}:
        return None
    if not isinstance(value["event_type"], str) or not value["event_type"]:
        return None
    if not isinstance(value["event_payload"], dict):
        return None
    return value


def _visible(message: dict[str, Any], include_metadata: bool) -> dict[str, Any]:
    """A stored message as an API answer shows it. conversations.replies and conversations.history return
    `metadata` only when asked: include_all_metadata "Return all metadata associated with messages.
    Defaults to false." (the IncludeAllMetadata argument of conversations.replies and .history in
    https://docs.slack.dev/tools/node-slack-sdk/reference/web-api/interfaces/ConversationsRepliesArguments;
    https://api.slack.com/methods/conversations.replies#arg_include_all_metadata). Other methods that
    return messages (reactions.get, the chat.postMessage answer) document no such flag, so the fake never
    shows metadata there (stricter)."""
    if include_metadata or "metadata" not in message:
        return message
    return {key: value for key, value in message.items() if key != "metadata"}


def _rich_text(text: str) -> dict[str, Any]:
    """The rich_text block Slack clients attach to a typed message (payloads/message.json)."""
    return {
        "type": "rich_text",
        "block_id": uuid.uuid4().hex[:4],
        "elements": [{"type": "rich_text_section", "elements": [{"type": "text", "text": text}]}],
    }


def _channel_type(channel: str) -> str:
    """The conversation type Slack reports, from the id's first letter (D: a DM, G: private, C: public;
    a private channel whose id starts with C is reported as "channel" here, the only guess possible)."""
    return {"D": "im", "G": "group"}.get(channel[:1], "channel")
