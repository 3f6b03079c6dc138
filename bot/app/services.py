"""Services: the one object that holds every long-lived client, built once in `__main__`."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
from collections.abc import Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import aiohttp
from slack_sdk.http_retry.builtin_async_handlers import AsyncConnectionErrorRetryHandler
from slack_sdk.web.async_client import AsyncWebClient

from bot.app.config import ReferenceHosting, Settings
from bot.app.metrics import Metrics
from bot.app.tasks import Tasks
from bot.backends.oxen import OxenClient, RetryPolicy
from bot.backends.oxen_backend import OxenBackend
from bot.domain.secrets import Redactor
from bot.features.actions import Branching
from bot.features.history import History
from bot.features.intake import Intake
from bot.features.iterations import Iterations
from bot.features.kits import Kits
from bot.features.permutations import Permutations
from bot.features.reference_hosting import DataUriHost, OxenRepoHost, ReferenceHost, SignedUrlHost
from bot.features.references import References
from bot.features.usage import UsageReports
from bot.features.votes import Clock, Votes
from bot.jobs.pipeline import JobPipeline
from bot.jobs.positions import QueuePositions
from bot.jobs.queue import JobQueue
from bot.jobs.runner import JobRunner
from bot.jobs.uploads import ShareTiming, UploadMessages
from bot.slack.channel_history import ChannelHistory
from bot.slack.files import SlackFileReader, SlackFiles
from bot.slack.gateway import SlackGateway
from bot.slack.membership import ChannelAccess
from bot.slack.messages import SlackMessages
from bot.slack.pacing import PacedWebClient, Pacer
from bot.store.database_lock import DatabaseLock
from bot.store.store import Store
from bot.views import blocks as views

T = TypeVar("T")

HOME_PUBLISH_GRACE = 5.0
"""At shutdown, how long App Home publishes already under way may take before they are cancelled."""


@dataclass
class Services:
    """Everything handlers and transports need; no module-level globals anywhere."""

    settings: Settings
    metrics: Metrics
    store: Store
    http: aiohttp.ClientSession
    slack: AsyncWebClient
    gateway: SlackGateway
    oxen: OxenClient
    backend: OxenBackend
    runner: JobRunner
    intake: Intake
    references: References
    reference_host: ReferenceHost | None
    iterations: Iterations
    branching: Branching
    history: History
    uploads: UploadMessages
    votes: Votes
    usage: UsageReports
    kits: Kits
    permutations: Permutations
    tasks: Tasks = field(default_factory=lambda: Tasks("background task"))
    """Background work (App Home publishes, housekeeping): see `spawn`."""
    listeners: Tasks = field(default_factory=lambda: Tasks("listener"))
    """Bolt listener invocations still running after their ack (handlers register them here)."""
    database_lock: DatabaseLock | None = None
    """With SQLite, this process's hold on the database file (one process per file)."""

    @classmethod
    async def build(
        cls,
        settings: Settings,
        *,
        oxen_retry: RetryPolicy | None = None,
        share_timing: ShareTiming | None = None,
        vote_clock: Clock | None = None,
    ) -> Services:
        """Open the store (a SQLite file is locked to this process: bot/store/database_lock.py) and create
        the clients (inside the running event loop); `share_timing` bounds the wait for each upload
        message's ts (tests shorten it); `vote_clock` times vote deadlines."""
        metrics = Metrics()
        tasks = Tasks("background task")
        database = settings.database
        lock = DatabaseLock.acquire(database) if isinstance(database, Path) else None
        try:
            store = await Store.open(database)
        except BaseException:
            if lock is not None:
                lock.release()
            raise
        http = aiohttp.ClientSession()
        pacer = Pacer(interval=settings.slack_post_interval)
        redactor = Redactor(settings.secret_values)
        slack = PacedWebClient(
            token=settings.slack_bot_token.get_secret_value(),
            base_url=settings.slack_api_url,
            session=http,
            # Only failures to connect are retried by the SDK: after a disconnect the call may have been
            # carried out, and retrying chat.postMessage would post twice (the gateway decides instead).
            # Rate limits are the pacer's: posts take turns per channel and a 429 waits out Retry-After.
            retry_handlers=[AsyncConnectionErrorRetryHandler(error_types=[aiohttp.ClientConnectorError])],
            pacer=pacer,
            redactor=redactor,
        )
        oxen = OxenClient(
            settings.oxen_api_url,
            settings.oxen_api_key.get_secret_value(),
            metrics=metrics,
            retry=oxen_retry,
            redactor=redactor,
        )
        backend = OxenBackend(oxen, redactor=redactor, poll_interval=settings.oxen_poll_interval)
        messages = SlackMessages(slack, redactor)
        gateway = SlackGateway(slack, redactor)
        reader = SlackFileReader(
            slack, http, token=settings.slack_bot_token.get_secret_value(), hosts=settings.slack_file_hosts
        )
        host = build_host(settings, oxen, store)
        references = References(
            store=store,
            oxen=oxen,
            slack=gateway,
            reader=reader,
            host=host,
            cache=settings.data_dir / "refs",
            max_bytes=settings.max_reference_bytes,
            reuse_result_urls=settings.oxen_reuse_result_urls,
        )
        queue = JobQueue(
            store,
            lambda job_id: runner.run(job_id),
            owner=settings.replica_id,
            slots=settings.max_concurrent_jobs,
            running_per_user=settings.max_active_per_user,
            waiting_per_user=settings.max_queued_per_user,
            lease_seconds=settings.lease_seconds,
            exclusive=lock is not None,
        )
        files = SlackFiles(slack, http)
        uploads = UploadMessages(store=store, files=files, timing=share_timing)
        pipeline = JobPipeline(
            store=store,
            backend=backend,
            messages=messages,
            files=files,
            uploads=uploads,
            references=references,
            critical=queue.critical,
            meter=metrics,
            job_timeout=settings.oxen_job_timeout,
            poll_interval=settings.oxen_poll_interval,
        )
        positions = QueuePositions(
            positions=queue.positions,
            load=store.get_job,
            edit=lambda job, position: gateway.update(
                job.channel_id, str(job.status_ts), views.status(job, position=position)
            ),
            unit=pacer.unit,
        )
        queue.on_change.append(positions.changed)
        runner = JobRunner(store=store, pipeline=pipeline, queue=queue, positions=positions)
        metrics.gauge("dreamboard_jobs", "state", runner.state_counts)
        metrics.counter("dreamboard_sql_statements_total", lambda: float(store.statements))
        metrics.counter("dreamboard_store_write_faults_total", lambda: float(store.write_faults))
        metrics.counter("dreamboard_slack_ratelimited_total", lambda: float(pacer.limited))
        metrics.counter("dreamboard_slack_paced_seconds_total", lambda: pacer.waited)
        metrics.counter("dreamboard_queue_position_edits_total", lambda: float(positions.edits))
        intake = Intake(
            store=store,
            backend=backend,
            runner=runner,
            default_model=settings.oxen_model,
            default_size=settings.oxen_size,
            access=ChannelAccess(slack),
            backlog=lambda channel: pacer.backlog(channel) / pacer.unit,
            quotas=settings.quotas,
            kits=store.kit,
        )
        iterations = Iterations(store=store, intake=intake, references=references, slack=gateway)
        grace = settings.slack_file_grace
        branching = Branching(
            store=store, intake=intake, runner=runner, slack=gateway, references=references, file_grace=grace
        )
        history = History(store=store, slack=gateway, spawn=tasks.spawn, file_grace=grace)
        kits = Kits(
            store=store, slack=gateway, references=references, admins=settings.kit_admins, file_grace=grace
        )
        pipeline.on_finished.append(lambda job: history.refresh_after_job(job.team_id, job.user_id))
        votes = Votes(
            store=store,
            slack=gateway,
            history=ChannelHistory(slack),
            tz=settings.quotas.tz,
            clock=vote_clock,
            file_grace=grace,
        )
        usage = UsageReports(
            store=store,
            slack=gateway,
            quotas=settings.quotas,
            quota_line=intake.usage_today,
            admins=settings.kit_admins,
            price=settings.oxen_price_per_image,
        )
        permutations = Permutations(
            store=store,
            intake=intake,
            slack=gateway,
            files=files,
            references=references,
            spawn=lambda coro: tasks.spawn(coro, name="contact sheet"),
        )
        pipeline.on_finished.append(permutations.job_finished)
        return cls(
            settings,
            metrics,
            store,
            http,
            slack,
            gateway,
            oxen,
            backend,
            runner,
            intake,
            references,
            host,
            iterations,
            branching,
            history,
            uploads,
            votes,
            usage,
            kits,
            permutations,
            tasks,
            database_lock=lock,
        )

    def spawn(self, coro: Coroutine[Any, Any, T], *, name: str) -> asyncio.Task[T]:
        """Run `coro` in the background, tracked: a failure is logged under `name`, and `aclose`
        waits for the task (briefly) and cancels it if needed. Refused once shutdown has begun."""
        return self.tasks.spawn(coro, name=name)

    async def aclose(self, grace: float = 20.0) -> None:
        """Shut down in order, once no new requests arrive (the transports are closed): let acked
        listener work finish (up to `grace` seconds, so an acked command is still stored), stop the
        runner (letting uploads finish, up to `grace`), stop waiting for upload messages' ts, let App Home
        publishes under way finish, cancel
        any other background task, then close every client and the store."""
        await self.listeners.drain(grace)
        await self.runner.stop(grace)
        await self.uploads.close()
        await self.backend.stop()
        await self.history.close(min(grace, HOME_PUBLISH_GRACE))
        await self.votes.stop()
        await self.tasks.drain(min(grace, HOME_PUBLISH_GRACE))
        await self.oxen.aclose()
        await self.http.close()
        await self.store.close()
        if self.database_lock is not None:
            self.database_lock.release()


def build_host(settings: Settings, oxen: OxenClient, store: Store | None = None) -> ReferenceHost | None:
    """The configured strategy; `auto` prefers public_url, then oxen_repo, and never picks data_uri.
    With `store`, public_url keeps every reference in the database too, for the other replicas."""
    choice = settings.reference_hosting
    if choice is ReferenceHosting.DATA_URI:
        return DataUriHost()
    if settings.public_base_url and choice in (ReferenceHosting.AUTO, ReferenceHosting.PUBLIC_URL):
        secret = reference_url_secret(settings)
        return SignedUrlHost(settings.public_base_url, secret, settings.data_dir / "refs", store=store)
    if settings.oxen_reference_repo and choice in (ReferenceHosting.AUTO, ReferenceHosting.OXEN_REPO):
        return OxenRepoHost(oxen, settings.oxen_reference_repo, settings.data_dir / "oxen-repo-commits")
    return None


def reference_url_secret(settings: Settings) -> bytes:
    """The key `/refs/` URLs are signed with: derived from the bot token, so every replica of one
    deployment signs and checks the same URLs."""
    token = settings.slack_bot_token.get_secret_value().encode()
    return hmac.new(token, b"dreamboard reference urls", hashlib.sha256).digest()
