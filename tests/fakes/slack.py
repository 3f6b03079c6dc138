"""FakeSlack: a loopback Slack Web API, private file host, response URLs, Socket Mode endpoint and a
signed-request sender, recording every call (DESIGN.md, "Test harness").

Doc references are to ../shared/docs/slack.md (from the repo root) unless a URL is given. Where the docs
are silent the fake picks the stricter behaviour and says so next to the code."""

from __future__ import annotations

import asyncio
import itertools
import json
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlencode

import aiohttp
from aiohttp import web

from tests.fakes.recorder import Call, Recorder, drop_connection, take_fault
from tests.fakes.signing import slack_signature

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
SHARE_DELAY = 1.0
"""Seconds between files.completeUploadExternal's answer and the share (message, `shares`, event). Slack
completes the share asynchronously, after security scans, so its answer and the first files.info usually
lack `shares` (seratch in slackapi/bolt-js#2115; python-slack-sdk#1277, #1363), and a block naming the file
fails until about a second later (python-slack-sdk#1521, slack.md §2.2). The default is that second."""
FILE_SHARE_PAYLOAD = json.loads(
    (Path(__file__).parent / "payloads" / "bot_upload_file_share.json").read_text(encoding="utf-8")
)
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
        share_delay: float = SHARE_DELAY,
        event_files: Literal["full", "stub"] = "full",
    ) -> None:
        """`share_delay`: see SHARE_DELAY. `event_files`: whether the bot's own file_share events carry
        full file objects or `file_access: "check_file_info"` stubs (as Slack sends in Slack Connect
        channels, and as the bot must expect anywhere: the stub keeps only the id)."""
        self.bot_token = bot_token
        self.app_token = app_token
        self.signing_secret = signing_secret
        self.team_id = team_id
        self.bot_user_id = bot_user_id
        self.bot_id = bot_id
        self.keep_uploads = keep_uploads
        self.share_delay = share_delay
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
        self.url = ""
        self._messages: dict[str, list[dict[str, Any]]] = {}
        self._channel_errors: dict[str, str] = {}
        self._faults: dict[str, list[Fault]] = {}
        self._html_instead: set[str] = set()
        self._ids = itertools.count(1)
        self._last_ts = 0.0
        self._sockets: list[web.WebSocketResponse] = []
        self._acks: dict[str, asyncio.Future[dict[str, Any]]] = {}
        self._runner: web.AppRunner | None = None
        self._session: aiohttp.ClientSession | None = None

    # -- lifecycle -------------------------------------------------------------------------------

    async def __aenter__(self) -> FakeSlack:
        app = web.Application(handler_args={"handler_cancellation": True})
        app.router.add_route("*", "/api/{method}", self._api)
        app.router.add_post("/upload/{file_id}", self._upload)
        app.router.add_get("/files-pri/{path:.*}", self._download)
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

    def shares_pending(self) -> int:
        """Completed uploads whose share has not happened yet."""
        return len(self._sharing)

    async def wait_shared(self, timeout: float = 10.0) -> None:
        """Wait until every completed upload is shared (its message posted, its event delivered)."""
        await self.recorder.wait_until(lambda: not self._sharing, timeout=timeout)

    def set_channel_error(self, channel: str, error: str) -> None:
        """Make posting into `channel` fail with `not_in_channel` or `channel_not_found`."""
        self._channel_errors[channel] = error

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
        or "upload" for the upload URL that files.getUploadURLExternal hands out.

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
        if method == "upload" and error is not None:
            raise ValueError("the upload URL is not the Web API and has no ok:false answers")
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
        """Store a person's message in the conversation; returns the `message` event Slack would send."""
        message: dict[str, Any] = {"type": "message", "user": user, "text": text, "ts": self._next_ts()}
        if thread_ts:
            message["thread_ts"] = thread_ts
        if files:
            message["files"] = files
            message["subtype"] = "file_share"
            message["upload"] = False
        self._messages.setdefault(channel, []).append(message)
        return {
            **message,
            "channel": channel,
            "channel_type": channel_type,
            "team": self.team_id,
            "event_ts": message["ts"],
            "client_msg_id": str(uuid.uuid4()),
        }

    def serve_html_instead(self, file_id: str) -> None:
        """Serve the sign-in page for this file even with a valid token."""
        self._html_instead.add(file_id)

    def new_response_url(self) -> str:
        """A fresh `response_url` for a command or action."""
        return f"{self.url}/response/{next(self._ids)}"

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
        started = time.perf_counter()
        async with self._session.post(events_url, data=body.encode(), headers=headers) as response:
            text = await response.text()
        return SignedResponse(response.status, text, time.perf_counter() - started)

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
        """The fields of a slash command invocation."""
        return {
            "token": "verification-token-unused",
            "team_id": self.team_id,
            "team_domain": "dreamteam",
            "channel_id": channel_id,
            "channel_name": channel_name,
            "user_id": user_id,
            "user_name": user_name,
            "command": command,
            "text": text,
            "api_app_id": "A0APP",
            "is_enterprise_install": "false",
            "response_url": self.new_response_url(),
            "trigger_id": trigger_id or f"{next(self._ids)}.{uuid.uuid4().hex}",
        }

    async def send_command(self, events_url: str, text: str, **fields: Any) -> SignedResponse:
        """Invoke `/imagine <text>` (form-encoded, signed)."""
        return await self.send_command_payload(events_url, self.command_payload(text, **fields))

    async def send_command_payload(self, events_url: str, payload: dict[str, str]) -> SignedResponse:
        """Send a prepared command payload (again, to simulate a duplicate delivery)."""
        return await self.post_signed(
            events_url, urlencode(payload), content_type="application/x-www-form-urlencoded"
        )

    def event_envelope(self, event: dict[str, Any], *, event_id: str | None = None) -> dict[str, Any]:
        """An Events API `event_callback` body around `event`."""
        return {
            "token": "verification-token-unused",
            "team_id": self.team_id,
            "api_app_id": "A0APP",
            "event": event,
            "type": "event_callback",
            "event_id": event_id or f"Ev{uuid.uuid4().hex[:10].upper()}",
            "event_time": int(time.time()),
            "authorizations": [
                {"team_id": self.team_id, "user_id": self.bot_user_id, "is_bot": True, "enterprise_id": None}
            ],
        }

    async def send_event(
        self,
        events_url: str,
        event: dict[str, Any],
        *,
        event_id: str | None = None,
        retry_num: int | None = None,
    ) -> SignedResponse:
        """Deliver an event (JSON, signed)."""
        body = json.dumps(self.event_envelope(event, event_id=event_id))
        return await self.post_signed(events_url, body, content_type="application/json", retry_num=retry_num)

    def button_payload(
        self, button: dict[str, Any], *, user_id: str, channel_id: str, message: dict[str, Any]
    ) -> dict[str, Any]:
        """A `block_actions` payload for a click on `button` (a Block Kit element) in `message`."""
        return {
            "type": "block_actions",
            "team": {"id": self.team_id, "domain": "dreamteam"},
            "user": {"id": user_id, "username": user_id.lower(), "team_id": self.team_id},
            "api_app_id": "A0APP",
            "token": "verification-token-unused",
            "container": {"type": "message", "message_ts": message["ts"], "channel_id": channel_id},
            "trigger_id": f"{next(self._ids)}.{uuid.uuid4().hex}",
            "channel": {"id": channel_id, "name": "general"},
            "message": message,
            "response_url": self.new_response_url(),
            "actions": [
                {
                    "type": "button",
                    "action_id": button["action_id"],
                    "block_id": "actions",
                    "text": button["text"],
                    "value": button.get("value", ""),
                    "action_ts": f"{time.time():.6f}",
                }
            ],
        }

    def view_submission_payload(
        self, view: dict[str, Any], values: dict[str, dict[str, Any]], *, user_id: str
    ) -> dict[str, Any]:
        """A `view_submission` payload for `view` (as opened) with the given state values."""
        return {
            "type": "view_submission",
            "team": {"id": self.team_id, "domain": "dreamteam"},
            "user": {"id": user_id, "username": user_id.lower(), "team_id": self.team_id},
            "api_app_id": "A0APP",
            "token": "verification-token-unused",
            "trigger_id": f"{next(self._ids)}.{uuid.uuid4().hex}",
            "view": {**view, "id": "V0EDIT", "state": {"values": values}},
        }

    def reaction_event(
        self, reaction: str, *, user: str, channel: str, ts: str, item_user: str | None = None
    ) -> dict[str, Any]:
        """A `reaction_added` event on the message `channel`/`ts`."""
        return {
            "type": "reaction_added",
            "user": user,
            "reaction": reaction,
            "item_user": item_user or self.bot_user_id,
            "item": {"type": "message", "channel": channel, "ts": ts},
            "event_ts": f"{time.time():.6f}",
        }

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
        return any(not ws.closed for ws in self._sockets)

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
        """Send an envelope over the socket and return the client's ack."""
        ws = next(ws for ws in self._sockets if not ws.closed)
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
        return await asyncio.wait_for(acked, timeout)

    async def _socket(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(autoping=True)
        await ws.prepare(request)
        self._sockets.append(ws)
        await ws.send_json(
            {
                "type": "hello",
                "num_connections": 1,
                "debug_info": {"host": "fake", "approximate_connection_time": 3600},
                "connection_info": {"app_id": "A0APP"},
            }
        )
        await self.recorder.notify()
        async for message in ws:
            if message.type is not aiohttp.WSMsgType.TEXT:
                continue
            data = json.loads(message.data)
            future = self._acks.pop(str(data.get("envelope_id")), None)
            if future is not None and not future.done():
                future.set_result(data)
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
        result: dict[str, Any] = handler(params)
        if fault is not None and fault.after:
            answer = await self._fault_answer(request, fault)
            if answer is not None:
                return answer
        return web.json_response(result)

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
        await self.recorder.record(Call("file_download", {"path": path, "authorization": authorization}))
        file_id = path.split("/")[0].split("-")[-1]
        file = self.uploaded_files.get(file_id)
        if file is None or authorization != f"Bearer {self.bot_token}" or file_id in self._html_instead:
            return web.Response(text=SIGN_IN_PAGE, content_type="text/html")
        return web.Response(body=file.content, content_type=file.mimetype)

    async def _response_url(self, request: web.Request) -> web.Response:
        await self.recorder.record(Call("response_url", await request.json()))
        return web.Response(text="ok")

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
        if channel in self._channel_errors:
            return {"ok": False, "error": self._channel_errors[channel]}
        if not params.get("text") and not params.get("blocks"):
            return {"ok": False, "error": "no_text"}
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
        message = self._find(str(params.get("channel")), str(params.get("ts")))
        if message is None:
            return {"ok": False, "error": "message_not_found"}
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
        channel = str(params.get("channel", ""))
        if channel in self._channel_errors:
            return {"ok": False, "error": self._channel_errors[channel]}
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
        if channel in self._channel_errors:
            return {"ok": False, "error": self._channel_errors[str(channel)]}
        files = [self.uploaded_files.get(str(entry.get("id"))) for entry in entries]
        if not entries or any(file is None or not file.uploaded for file in files):
            return {"ok": False, "error": "file_not_found"}
        shared = [file for file in files if file is not None]
        for file, entry in zip(shared, entries, strict=True):
            file.completed = True
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
        event: dict[str, Any] = json.loads(json.dumps(FILE_SHARE_PAYLOAD["event"]))
        event.update(text=stored["text"], user=self.bot_user_id, ts=stored["ts"], event_ts=stored["ts"])
        event["channel"] = channel
        event["channel_type"] = "im" if channel.startswith("D") else "channel"
        if stored.get("thread_ts"):
            event["thread_ts"] = stored["thread_ts"]
        event["files"] = [self._event_file(file) for file in files]
        return event

    def _event_file(self, file: FakeFile) -> dict[str, Any]:
        if self.event_files == "stub":
            stub: dict[str, Any] = json.loads(json.dumps(FILE_SHARE_PAYLOAD["file_stub"]))
            return {**stub, "id": file.id}
        template: dict[str, Any] = json.loads(json.dumps(FILE_SHARE_PAYLOAD["file"]))
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
        return self._view(params)

    def _m_views_publish(self, params: dict[str, Any]) -> dict[str, Any]:
        return self._view(params)

    def _view(self, params: dict[str, Any]) -> dict[str, Any]:
        view = _json(params.get("view")) or {}
        if len(view.get("blocks", [])) > 100:
            return {"ok": False, "error": "invalid_arguments"}
        return {"ok": True, "view": {"id": f"V{next(self._ids):08d}", **view}}

    def _m_users_info(self, params: dict[str, Any]) -> dict[str, Any]:
        user = str(params.get("user"))
        name = user.lower()
        return {
            "ok": True,
            "user": {
                "id": user,
                "name": name,
                "real_name": name.title(),
                "is_admin": user in self.admins,
                "profile": {"display_name": name},
            },
        }

    def _m_conversations_replies(self, params: dict[str, Any]) -> dict[str, Any]:
        channel, ts = str(params.get("channel")), str(params.get("ts"))
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
        if channel in self._channel_errors:
            return {"ok": False, "error": self._channel_errors[channel]}
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
