"""`python -m bot doctor`: checks a deployment's Slack app and Oxen account against what Dreamboard
needs, one line per check, before any user finds out the hard way.

Each check is a small coroutine returning `Check`s; `diagnose` runs them in order, each bounded by a
timeout, and turns any failure (network, refusal, timeout) into a ✗ line, never a traceback. `render`
formats the report and passes every line through the Redactor, so no configured secret is printed.
Nothing is paid for unless `paid` is set, and then exactly one tiny generation is queued.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import io
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from urllib.parse import urlsplit

import aiohttp
import httpx
from PIL import Image
from slack_sdk.web.async_client import AsyncWebClient

from bot.app.config import Settings
from bot.app.metrics import Metrics
from bot.app.services import build_host
from bot.backends.base import BackendError, FailureKind
from bot.backends.model_schema import ModelSchema, plan_payload
from bot.backends.oxen import OxenClient, QueueRow, RetryPolicy
from bot.domain.hosts import is_loopback
from bot.domain.images import PreparedImage
from bot.domain.requests import SIZES
from bot.domain.secrets import Redactor
from bot.features.reference_hosting import DataUriHost, OxenRepoHost, SignedUrlHost
from bot.slack.errors import SlackError, call

MANIFEST = Path("manifest.yaml")
"""Where the doctor looks for the Slack app manifest by default (the repository root, the image's /app)."""
TEST_PROMPT = "Dreamboard doctor: a small plain blue square"
NEEDS_PAID = "skipped (needs --paid)"


class Mark(StrEnum):
    """How a check came out."""

    OK = "✓"
    FAIL = "✗"
    SKIP = "–"
    INFO = "•"


@dataclass(frozen=True)
class Check:
    """One line of the report: what was checked, what was found, and on a failure how to fix it."""

    name: str
    mark: Mark
    detail: str
    fix: str = ""


@dataclass(frozen=True)
class DoctorOptions:
    """What the operator asked for on the command line, and the bounds of each check."""

    channels: tuple[str, ...] = ()
    paid: bool = False
    manifest: Path = MANIFEST
    check_timeout: float = 20.0
    generation_timeout: float = 180.0


@dataclass
class _Found:
    """What earlier checks learned that later ones use."""

    schema: ModelSchema | None = None
    key_valid: bool = False
    result_url: str | None = None
    result_source: str = ""


def passed(name: str, detail: str) -> Check:
    """A ✓ line."""
    return Check(name, Mark.OK, detail)


def failed(name: str, detail: str, fix: str) -> Check:
    """A ✗ line with its fix."""
    return Check(name, Mark.FAIL, detail, fix)


def skipped(name: str, detail: str) -> Check:
    """A – line."""
    return Check(name, Mark.SKIP, detail)


def info(name: str, detail: str) -> Check:
    """A • line: a fact about the deployment that is not a failure."""
    return Check(name, Mark.INFO, detail)


# -- the manifest -------------------------------------------------------------------------------------


def manifest_bot_scopes(path: Path) -> frozenset[str]:
    """The entries under `oauth_config.scopes.bot` of a Slack app manifest (a small reader for the
    block-style YAML of manifest.yaml: PyYAML is not a dependency). Raises ValueError when none."""
    trail: list[tuple[int, str]] = []
    scopes: set[str] = set()
    for raw in path.read_text().splitlines():
        line = raw.split("#", 1)[0].rstrip()
        if not line.strip():
            continue
        indent = len(line) - len(line.lstrip())
        item = line.strip()
        if item.startswith("- "):
            if [key for _, key in trail] == ["oauth_config", "scopes", "bot"]:
                scopes.add(item[2:].strip().strip("'\""))
            continue
        while trail and trail[-1][0] >= indent:
            trail.pop()
        trail.append((indent, item.split(":", 1)[0]))
    if not scopes:
        raise ValueError(f"{path} lists no oauth_config.scopes.bot")
    return frozenset(scopes)


# -- Slack --------------------------------------------------------------------------------------------


async def check_slack_auth(slack: AsyncWebClient, manifest: Path) -> list[Check]:
    """`auth.test`: whose token it is, and its granted scopes (`X-OAuth-Scopes`, slack.md; every Web
    API answer carries it) against the manifest's bot scopes."""
    try:
        response = await call(slack.auth_test())
    except SlackError as exc:
        fix = (
            "SLACK_BOT_TOKEN is wrong or revoked: copy the Bot User OAuth Token again (OAuth & Permissions)"
            if exc.code in ("invalid_auth", "not_authed", "token_revoked", "account_inactive")
            else "check SLACK_API_URL and this machine's access to Slack"
        )
        return [
            failed("Slack auth.test", f"refused: {exc.code}", fix),
            skipped("Slack scopes", "needs a working auth.test"),
        ]
    who = (
        f"team {response.get('team')} ({response.get('team_id')}), "
        f"bot user @{response.get('user')} ({response.get('user_id')})"
    )
    checks = [passed("Slack auth.test", who)]
    headers = {key.lower(): value for key, value in (response.headers or {}).items()}
    granted_header = headers.get("x-oauth-scopes")
    try:
        wanted = manifest_bot_scopes(manifest)
    except (OSError, ValueError) as exc:
        return [
            *checks,
            failed(
                "Slack scopes",
                f"cannot read the manifest: {exc}",
                "run the doctor from the repository root or pass --manifest PATH",
            ),
        ]
    if granted_header is None:
        return [
            *checks,
            failed(
                "Slack scopes",
                "Slack's answer named no scopes (no X-OAuth-Scopes header)",
                "SLACK_API_URL must be Slack's Web API (https://slack.com/api/)",
            ),
        ]
    granted = {scope.strip() for scope in str(granted_header).split(",") if scope.strip()}
    missing = sorted(wanted - granted)
    extra = sorted(granted - wanted)
    if missing:
        return [
            *checks,
            failed(
                "Slack scopes",
                f"missing {', '.join(missing)} (manifest.yaml asks for {len(wanted)})",
                "add them under OAuth & Permissions (or update the app from manifest.yaml), then reinstall "
                "the app and copy the new token",
            ),
        ]
    more = f"; also granted: {', '.join(extra)}" if extra else ""
    return [*checks, passed("Slack scopes", f"all {len(wanted)} scopes of manifest.yaml granted{more}")]


async def check_slack_transport(settings: Settings, *, within: float) -> list[Check]:
    """Socket Mode: `apps.connections.open` with the app-level token, then the WebSocket's `hello`
    (slack.md §1.7), then close. HTTP mode: what Slack must be told."""
    if settings.slack_app_token is None:
        base = settings.public_base_url.rstrip("/") if settings.public_base_url else "https://<your host>"
        secret = "SLACK_SIGNING_SECRET is set" if settings.slack_signing_secret else "no signing secret"
        return [
            info(
                "Slack HTTP mode",
                f"{secret}; the slash command, Event Subscriptions and Interactivity Request URLs must be "
                f"{base}/slack/events, reachable from the internet (not tested from here)",
            )
        ]
    client = AsyncWebClient(base_url=settings.slack_api_url, timeout=int(max(within, 1)))
    try:
        opened = await call(
            client.apps_connections_open(app_token=settings.slack_app_token.get_secret_value())
        )
    except SlackError as exc:
        return [
            failed(
                "Slack Socket Mode",
                f"apps.connections.open refused: {exc.code}",
                "SLACK_APP_TOKEN must be an app-level token with connections:write (Basic Information → "
                "App-Level Tokens), and Socket Mode must be enabled for the app",
            )
        ]
    async with (
        aiohttp.ClientSession() as session,
        session.ws_connect(str(opened["url"]), timeout=aiohttp.ClientWSTimeout(ws_close=2.0)) as ws,
    ):
        first = await ws.receive_json(timeout=within)
    if not isinstance(first, dict) or first.get("type") != "hello":
        kind = first.get("type") if isinstance(first, dict) else type(first).__name__
        return [
            failed(
                "Slack Socket Mode",
                f"the socket's first message was {kind!r}, not hello",
                "SLACK_API_URL must be Slack's Web API (https://slack.com/api/)",
            )
        ]
    return [passed("Slack Socket Mode", "connected and received hello (then closed)")]


async def check_channel(slack: AsyncWebClient, channel: str) -> Check:
    """Whether the bot is in `channel`: `conversations.info` (`is_member`, `is_archived`) when the token
    may read it (channels:read, which the manifest does not ask for), else `conversations.history`,
    which answers `not_in_channel` / `channel_not_found` where the bot is not a member."""
    name = f"Slack channel {channel}"
    invite = f"invite the bot there (/invite @<bot> in {channel}) or use another channel"
    try:
        conversation = (await call(slack.conversations_info(channel=channel)))["channel"]
    except SlackError as exc:
        if exc.code != "missing_scope":
            return failed(name, f"conversations.info: {exc.code}", invite)
    else:
        if conversation.get("is_archived"):
            return failed(name, "archived", "unarchive it or use another channel")
        if not conversation.get("is_member"):
            return failed(name, "the bot is not a member", invite)
        return passed(name, "the bot is a member; not archived")
    try:
        await call(slack.conversations_history(channel=channel, limit=1))
    except SlackError as exc:
        return failed(name, f"conversations.history: {exc.code} (the bot is not a member)", invite)
    return passed(
        name, "the bot is a member (archived or not is unknown: conversations.info needs channels:read)"
    )


# -- Oxen ---------------------------------------------------------------------------------------------


async def check_oxen_key(oxen: OxenClient, settings: Settings, found: _Found) -> Check:
    """The key, by an authenticated per-account read: `GET /ai/queue?status=succeeded` (oxen-api.md
    §3.2). Remembers the newest succeeded generation's result URL for the result-URL check."""
    try:
        rows = await oxen.list_generations(model=settings.oxen_model, status="succeeded")
    except BackendError as exc:
        fix = (
            "OXEN_API_KEY is wrong or revoked: create one at https://oxen.ai/settings/profile"
            if exc.kind is FailureKind.AUTH
            else "check OXEN_API_URL and this machine's access to Oxen.ai"
        )
        return failed("Oxen API key", str(exc), fix)
    found.key_valid = True
    newest = _newest_with_result(rows)
    if newest is not None:
        found.result_url, found.result_source = newest.result_url, f"generation {newest.generation_id}"
    return passed("Oxen API key", f"accepted (GET /ai/queue listed {len(rows)} succeeded generations)")


async def check_oxen_schema(oxen: OxenClient, settings: Settings, found: _Found) -> list[Check]:
    """The model's live schema (`GET /ai/models/{id}`) and how each flag maps onto it, as the bot's own
    planner (`plan_payload`) maps it."""
    model = settings.oxen_model
    try:
        schema = await oxen.model_schema(model)
    except BackendError as exc:
        return [failed("Oxen model", str(exc), "set OXEN_MODEL to a text-to-image model Oxen.ai serves")]
    found.schema = schema
    sample = plan_payload(schema, prompt="p", size=settings.oxen_size, aspect_ratio="16:9", references=["r"])
    fields = ", ".join(sorted(schema.properties))
    checks = [passed("Oxen model", f"{model}: live schema fields {fields}")]
    if schema.aspect_ratios:
        checks.append(passed("Flag --ar", f"→ aspect_ratio ({', '.join(schema.aspect_ratios)})"))
    else:
        checks.append(info("Flag --ar", "no aspect_ratio field: " + _note(sample.notes, "aspect")))
    if schema.takes_seed:
        low, high = schema.limits.seed_range
        checks.append(passed("Flag --seed", f"→ seed ({low}…{high})"))
    else:
        checks.append(info("Flag --seed", "no seed field: " + _note(sample.notes, "seed")))
    sizes = schema.limits.sizes
    if settings.oxen_size not in sizes:
        checks.append(
            failed(
                "Flag --size",
                f"OXEN_SIZE={settings.oxen_size} is not offered ({', '.join(sizes)})",
                f"set OXEN_SIZE to one of {', '.join(sizes)}",
            )
        )
    elif "size" in sample.base:
        checks.append(passed("Flag --size", f"→ size ({', '.join(sizes)}; default {settings.oxen_size})"))
    else:
        checks.append(info("Flag --size", _note(sample.notes, "size")))
    checks.append(passed("Flag --n", "→ N separate generations of one image each (num_generations 1)"))
    if schema.references_field is None:
        checks.append(info("References", "the model takes no reference images: iterations cannot use them"))
    else:
        shape = "array" if isinstance(sample.base.get(schema.references_field), list) else "single URL"
        checks.append(
            passed("References", f"→ {schema.references_field} ({shape}, up to {schema.max_references})")
        )
    return checks


async def check_hosting(settings: Settings, oxen: OxenClient, anonymous: httpx.AsyncClient) -> Check:
    """Publish a tiny PNG through the configured hosting and fetch it back with no credentials."""
    name = "Reference hosting"
    host = build_host(settings, oxen)
    if host is None:
        return failed(
            name,
            "none configured: attached images and iterations on results cannot reach Oxen",
            "set PUBLIC_BASE_URL (the bot serves signed URLs) or OXEN_REFERENCE_REPO (see README, "
            "Reference hosting)",
        )
    if isinstance(host, DataUriHost):
        return info(name, "data_uri: references travel inline; nothing to fetch (reported failing at Oxen)")
    image = PreparedImage(_tiny_png(), "image/png")
    key = hashlib.sha256(image.data).hexdigest()[:32]
    url = await host.publish(image, key)
    shown = url.split("?", 1)[0]
    why = ""
    if isinstance(host, SignedUrlHost):
        why = (
            " The bot's own HTTP server serves this URL from the data directory: it fails when the bot "
            "is not running, or runs on another machine or volume."
        )
    elif isinstance(host, OxenRepoHost):
        why = " (One tiny commit to the repository.)"
    try:
        response = await anonymous.get(url)
    except httpx.HTTPError as exc:
        return failed(
            name, f"{host.description}: GET {shown} failed ({type(exc).__name__}).{why}", _reach(host)
        )
    if response.status_code != 200 or response.content != image.data:
        what = f"HTTP {response.status_code}" if response.status_code != 200 else "other bytes"
        return failed(
            name, f"{host.description}: GET {shown} without credentials gave {what}.{why}", _reach(host)
        )
    served = {
        SignedUrlHost: " (served by the running bot's HTTP server)",
        OxenRepoHost: " (one tiny commit to the repository, made once: later runs reuse it)",
    }.get(type(host), "")
    where = urlsplit(url).hostname or ""
    caveat = (
        " Fetched from this machine: the host is loopback, so Oxen cannot reach it."
        if is_loopback(where)
        else " Fetched from this machine; Oxen fetches from the internet (a host reachable only here fails)."
    )
    return passed(
        name, f"{host.description}: GET {shown} without credentials returned the PNG{served}.{caveat}"
    )


async def check_result_url(
    oxen: OxenClient, anonymous: httpx.AsyncClient, found: _Found, *, reused: bool
) -> list[Check]:
    """Whether a result URL downloads without the key (only then can OXEN_REUSE_RESULT_URLS=true work:
    a failure when it is set, information otherwise), and whether it downloads with it (the bot's own
    download)."""
    url = found.result_url
    if url is None:
        return [skipped("Result URL", "no succeeded generation to look at; run with --paid")]
    try:
        response = await anonymous.get(url)
    except httpx.HTTPError as exc:
        anon: Check = info("Result URL without key", f"GET failed ({type(exc).__name__})")
    else:
        if response.status_code == 200:
            anon = info(
                "Result URL without key",
                f"{found.result_source}: downloads without the key, so OXEN_REUSE_RESULT_URLS=true "
                "would work while the URL lasts (its lifetime is undocumented)",
            )
        elif reused:
            anon = failed(
                "Result URL without key",
                f"{found.result_source}: HTTP {response.status_code} without the key, so Oxen cannot "
                "fetch it as a reference, and OXEN_REUSE_RESULT_URLS is set: every iteration on a result "
                "would fail",
                "unset OXEN_REUSE_RESULT_URLS (results then go back through the reference hosting)",
            )
        else:
            anon = info(
                "Result URL without key",
                f"{found.result_source}: HTTP {response.status_code} without the key, so Oxen cannot "
                "fetch it as a reference: keep OXEN_REUSE_RESULT_URLS off (results go back through the "
                "reference hosting)",
            )
    try:
        async with oxen.download(url) as download:
            await download.aread()
    except BackendError as exc:
        keyed = failed("Result URL with key", str(exc), "results cannot be delivered; check OXEN_API_URL")
    else:
        keyed = passed("Result URL with key", f"{found.result_source}: downloaded")
    return [anon, keyed]


async def check_test_generation(
    oxen: OxenClient, settings: Settings, found: _Found, *, within: float, poll: float
) -> list[Check]:
    """One tiny paid generation: enqueue, see it in `GET /ai/queue`, wait (bounded; cancelled at Oxen
    on timeout or Ctrl-C), and remember its result URL for the result-URL check."""
    if found.schema is None:
        return [skipped("Test generation", "needs the model's schema")]
    sizes = found.schema.limits.sizes
    size = next((value for value in SIZES if value in sizes), sizes[0])
    plan = plan_payload(found.schema, prompt=TEST_PROMPT, size=size, aspect_ratio=None)
    [generation_id] = await oxen.enqueue(plan.body_for(1))
    listed = any(
        row.generation_id == generation_id for row in await oxen.list_generations(model=settings.oxen_model)
    )
    try:
        row = await asyncio.wait_for(_finished(oxen, generation_id, poll), within)
    except TimeoutError:
        await _cancel_quietly(oxen, generation_id)
        return [
            failed(
                "Test generation",
                f"{generation_id} did not finish within {within:g} s; cancelled at Oxen",
                "Oxen.ai may be busy: try again later, or raise OXEN_JOB_TIMEOUT if this is usual",
            ),
            passed("Queue listing", f"GET /ai/queue lists test generation {generation_id}")
            if listed
            else skipped("Queue listing", "the test generation did not finish"),
        ]
    except BaseException:  # Ctrl-C or a failed poll: the generation is not left running
        await asyncio.shield(_cancel_quietly(oxen, generation_id))
        raise
    if not listed:
        rows = await oxen.list_generations(model=settings.oxen_model, status=row.status)
        listed = any(r.generation_id == generation_id for r in rows)
    listing = (
        passed("Queue listing", f"GET /ai/queue lists test generation {generation_id}")
        if listed
        else failed(
            "Queue listing",
            f"GET /ai/queue does not list test generation {generation_id}",
            "a submission whose answer is lost cannot be found again; the bot may then pay twice",
        )
    )
    if row.status != "succeeded" or not row.result_url:
        reason = row.error_message or row.status
        return [
            failed("Test generation", f"{generation_id} ended {row.status}: {reason}", "see Oxen's message"),
            listing,
        ]
    found.result_url, found.result_source = row.result_url, f"test generation {generation_id}"
    return [passed("Test generation", f"{generation_id} succeeded ({size}, one image)"), listing]


# -- running and reporting ----------------------------------------------------------------------------


async def diagnose(
    settings: Settings, options: DoctorOptions, *, oxen_retry: RetryPolicy | None = None
) -> list[Check]:
    """Every check, in report order; never raises for a failed check."""
    checks: list[Check] = []
    limit = options.check_timeout

    async def run(
        name: str, check: Callable[[], Awaitable[Check | list[Check]]], bound: float = limit
    ) -> None:
        try:
            async with asyncio.timeout(bound):
                result = await check()
        except TimeoutError:
            checks.append(
                failed(name, f"no answer within {bound:g} s", "check the network and the URL settings")
            )
            return
        except Exception as exc:  # every failure becomes a ✗ line, not a traceback
            checks.append(failed(name, _describe(exc), "check the network and the URL settings"))
            return
        checks.extend(result if isinstance(result, list) else [result])

    slack = AsyncWebClient(
        token=settings.slack_bot_token.get_secret_value(), base_url=settings.slack_api_url, timeout=int(limit)
    )
    redactor = Redactor(settings.secret_values)
    oxen = OxenClient(
        settings.oxen_api_url,
        settings.oxen_api_key.get_secret_value(),
        metrics=Metrics(),
        retry=oxen_retry or RetryPolicy(attempts=2),
        redactor=redactor,
    )
    found = _Found()
    try:
        async with httpx.AsyncClient(timeout=limit, follow_redirects=True) as anonymous:
            await run("Slack auth.test", lambda: check_slack_auth(slack, options.manifest))
            transport = "Slack Socket Mode" if settings.socket_mode else "Slack HTTP mode"
            await run(transport, lambda: check_slack_transport(settings, within=limit))
            for channel in options.channels:
                await run(f"Slack channel {channel}", functools.partial(check_channel, slack, channel))
            await run("Oxen API key", lambda: check_oxen_key(oxen, settings, found))
            if found.key_valid:
                await run("Oxen model", lambda: check_oxen_schema(oxen, settings, found))
            else:
                checks.append(skipped("Oxen model", "needs a valid key"))
            await run("Reference hosting", lambda: check_hosting(settings, oxen, anonymous))
            if not options.paid:
                checks.append(skipped("Test generation", NEEDS_PAID))
                checks.append(skipped("Queue listing", NEEDS_PAID))
            elif found.schema is None:
                checks.append(skipped("Test generation", "needs a valid key and the model's schema"))
                checks.append(skipped("Queue listing", "needs the test generation"))
            else:
                bound = options.generation_timeout
                await run(
                    "Test generation",
                    lambda: check_test_generation(
                        oxen, settings, found, within=bound, poll=settings.oxen_poll_interval
                    ),
                    bound + limit,
                )
            await run(
                "Result URL",
                lambda: check_result_url(oxen, anonymous, found, reused=settings.oxen_reuse_result_urls),
            )
    finally:
        await oxen.aclose()
    return checks


def render(checks: Sequence[Check], redactor: Redactor) -> str:
    """The report: one line per check, then a summary naming what failed; secrets redacted."""
    lines = []
    for check in checks:
        line = f"{check.mark} {check.name}: {check.detail}"
        if check.mark is Mark.SKIP and not check.detail.startswith("skipped"):
            line = f"{check.mark} {check.name}: skipped ({check.detail})"
        if check.fix:
            line += f" → fix: {check.fix}"
        lines.append(line)
    failures = [check.name for check in checks if check.mark is Mark.FAIL]
    skips = sum(check.mark is Mark.SKIP for check in checks)
    if failures:
        lines.append(
            f"FAILED: {len(failures)} of {len(checks)} checks ({', '.join(failures)}); {skips} skipped."
        )
    else:
        lines.append(f"OK: no check failed ({len(checks) - skips} run, {skips} skipped).")
    return "\n".join(redactor.redact(line) for line in lines)


def exit_code(checks: Sequence[Check]) -> int:
    """0 when no check failed, 1 otherwise."""
    return 1 if any(check.mark is Mark.FAIL for check in checks) else 0


# -- helpers ------------------------------------------------------------------------------------------


async def _finished(oxen: OxenClient, generation_id: str, poll: float) -> QueueRow:
    while True:
        row = await oxen.poll(generation_id)
        if row.finished:
            return row
        await asyncio.sleep(poll)


async def _cancel_quietly(oxen: OxenClient, generation_id: str) -> None:
    try:
        async with asyncio.timeout(10):
            await oxen.cancel(generation_id)
    except (BackendError, TimeoutError):
        pass


def _newest_with_result(rows: Sequence[QueueRow]) -> QueueRow | None:
    done = [row for row in rows if row.result_url]
    return max(done, key=lambda row: float((row.model_extra or {}).get("completed_at") or 0), default=None)


def _note(notes: Sequence[str], word: str) -> str:
    return next((note for note in notes if word in note.lower()), "not sent")


def _reach(host: object) -> str:
    if isinstance(host, SignedUrlHost):
        return "start the bot, and make PUBLIC_BASE_URL a public https URL that reaches its HTTP server"
    return "make OXEN_REFERENCE_REPO a public repository the key can write to"


def _describe(exc: BaseException) -> str:
    if isinstance(exc, BackendError | SlackError):
        return str(exc)
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


def _tiny_png() -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (16, 16), (40, 90, 200)).save(buffer, format="PNG")
    return buffer.getvalue()
