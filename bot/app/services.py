"""Services: the one object that holds every long-lived client, built once in `__main__`."""

from __future__ import annotations

from dataclasses import dataclass

import aiohttp
from slack_sdk.http_retry.builtin_async_handlers import (
    AsyncConnectionErrorRetryHandler,
    AsyncRateLimitErrorRetryHandler,
)
from slack_sdk.web.async_client import AsyncWebClient

from bot.app.config import Settings
from bot.app.metrics import Metrics
from bot.backends.oxen import OxenClient, RetryPolicy
from bot.backends.oxen_backend import OxenBackend
from bot.domain.secrets import Redactor
from bot.features.actions import Branching
from bot.features.history import History
from bot.features.intake import Intake
from bot.features.iterations import Iterations
from bot.features.reference_hosting import ReferenceHost, build_host
from bot.features.references import References
from bot.jobs.pipeline import JobPipeline
from bot.jobs.runner import JobRunner
from bot.jobs.scheduler import FairScheduler
from bot.slack.files import SlackFileReader, SlackFiles
from bot.slack.messages import SlackMessages
from bot.store.sqlite import Store


@dataclass
class Services:
    """Everything handlers and transports need; no module-level globals anywhere."""

    settings: Settings
    metrics: Metrics
    store: Store
    http: aiohttp.ClientSession
    slack: AsyncWebClient
    oxen: OxenClient
    backend: OxenBackend
    runner: JobRunner
    intake: Intake
    references: References
    reference_host: ReferenceHost | None
    iterations: Iterations
    branching: Branching
    history: History

    @classmethod
    async def build(cls, settings: Settings, *, oxen_retry: RetryPolicy | None = None) -> Services:
        """Open the store and create the clients (inside the running event loop)."""
        metrics = Metrics()
        store = await Store.open(settings.database_path)
        http = aiohttp.ClientSession()
        slack = AsyncWebClient(
            token=settings.slack_bot_token.get_secret_value(),
            base_url=settings.slack_api_url,
            session=http,
            # Only failures to connect are retried by the SDK: after a disconnect the call may have been
            # carried out, and retrying chat.postMessage would post twice (the gateway decides instead).
            retry_handlers=[
                AsyncConnectionErrorRetryHandler(error_types=[aiohttp.ClientConnectorError]),
                AsyncRateLimitErrorRetryHandler(max_retry_count=3),
            ],
        )
        redactor = Redactor(settings.secret_values)
        oxen = OxenClient(
            settings.oxen_api_url,
            settings.oxen_api_key.get_secret_value(),
            metrics=metrics,
            retry=oxen_retry,
            redactor=redactor,
        )
        backend = OxenBackend(oxen, redactor=redactor)
        messages = SlackMessages(slack, redactor)
        reader = SlackFileReader(
            slack, http, token=settings.slack_bot_token.get_secret_value(), hosts=settings.slack_file_hosts
        )
        host = build_host(settings, oxen)
        references = References(
            store=store,
            oxen=oxen,
            slack=slack,
            reader=reader,
            host=host,
            cache=settings.data_dir / "refs",
            max_bytes=settings.max_reference_bytes,
        )
        scheduler = FairScheduler(
            lambda job_id: runner.run(job_id),
            slots=settings.max_concurrent_jobs,
            running_per_user=settings.max_active_per_user,
            waiting_per_user=settings.max_queued_per_user,
        )
        pipeline = JobPipeline(
            store=store,
            backend=backend,
            messages=messages,
            files=SlackFiles(slack, http),
            references=references,
            critical=scheduler.critical,
            job_timeout=settings.oxen_job_timeout,
            poll_interval=settings.oxen_poll_interval,
        )
        runner = JobRunner(store=store, pipeline=pipeline, scheduler=scheduler)
        metrics.gauge("dreamboard_jobs", "state", runner.state_counts)
        metrics.counter("dreamboard_sql_statements_total", lambda: float(store.statements))
        intake = Intake(settings=settings, store=store, backend=backend, runner=runner)
        iterations = Iterations(store=store, intake=intake, references=references, slack=slack)
        branching = Branching(store=store, intake=intake, runner=runner, slack=slack)
        history = History(store=store, slack=slack)
        pipeline.on_finished.append(lambda job: history.refresh_home(job.team_id, job.user_id))
        return cls(
            settings,
            metrics,
            store,
            http,
            slack,
            oxen,
            backend,
            runner,
            intake,
            references,
            host,
            iterations,
            branching,
            history,
        )

    async def aclose(self, grace: float = 20.0) -> None:
        """Stop the runner (letting uploads finish), then close every client and the store."""
        await self.runner.stop(grace)
        await self.backend.stop()
        await self.history.close()
        await self.oxen.aclose()
        await self.http.close()
        await self.store.close()
