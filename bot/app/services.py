"""Services: the one object that holds every long-lived client, built once in `__main__`."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from dataclasses import dataclass, field
from typing import Any, TypeVar

import aiohttp
from slack_sdk.http_retry.builtin_async_handlers import (
    AsyncConnectionErrorRetryHandler,
    AsyncRateLimitErrorRetryHandler,
)
from slack_sdk.web.async_client import AsyncWebClient

from bot.app.config import Settings
from bot.app.metrics import Metrics
from bot.app.tasks import Tasks
from bot.backends.oxen import OxenClient, RetryPolicy
from bot.features.actions import Branching
from bot.features.history import History
from bot.features.intake import Intake
from bot.features.iterations import Iterations
from bot.features.reference_hosting import ReferenceHost, build_host
from bot.features.references import References
from bot.jobs.runner import JobRunner
from bot.slack.files import SlackFileReader, SlackFiles
from bot.slack.messages import SlackMessages
from bot.store.sqlite import Store

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
    oxen: OxenClient
    runner: JobRunner
    intake: Intake
    references: References
    reference_host: ReferenceHost | None
    iterations: Iterations
    branching: Branching
    history: History
    tasks: Tasks = field(default_factory=lambda: Tasks("background task"))
    """Background work (App Home publishes, housekeeping): see `spawn`."""
    listeners: Tasks = field(default_factory=lambda: Tasks("listener"))
    """Bolt listener invocations still running after their ack (handlers register them here)."""

    @classmethod
    async def build(cls, settings: Settings, *, oxen_retry: RetryPolicy | None = None) -> Services:
        """Open the store and create the clients (inside the running event loop)."""
        metrics = Metrics()
        tasks = Tasks("background task")
        store = await Store.open(settings.database_path)
        http = aiohttp.ClientSession()
        slack = AsyncWebClient(
            token=settings.slack_bot_token.get_secret_value(),
            base_url=settings.slack_api_url,
            session=http,
            retry_handlers=[
                AsyncConnectionErrorRetryHandler(),
                AsyncRateLimitErrorRetryHandler(max_retry_count=3),
            ],
        )
        oxen = OxenClient(
            settings.oxen_api_url, settings.oxen_api_key.get_secret_value(), metrics=metrics, retry=oxen_retry
        )
        messages = SlackMessages(slack)
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
        runner = JobRunner(
            store=store,
            oxen=oxen,
            messages=messages,
            files=SlackFiles(slack, http),
            references=references,
            settings=settings,
            metrics=metrics,
        )
        intake = Intake(settings=settings, store=store, oxen=oxen, runner=runner, messages=messages)
        iterations = Iterations(store=store, intake=intake, references=references, slack=slack)
        branching = Branching(store=store, intake=intake, runner=runner, slack=slack)
        history = History(store=store, slack=slack, spawn=tasks.spawn)
        runner.on_finished.append(lambda job: history.refresh_home(job.team_id, job.user_id))
        return cls(
            settings,
            metrics,
            store,
            http,
            slack,
            oxen,
            runner,
            intake,
            references,
            host,
            iterations,
            branching,
            history,
            tasks,
        )

    def spawn(self, coro: Coroutine[Any, Any, T], *, name: str) -> asyncio.Task[T]:
        """Run `coro` in the background, tracked: a failure is logged under `name`, and `aclose`
        waits for the task (briefly) and cancels it if needed. Refused once shutdown has begun."""
        return self.tasks.spawn(coro, name=name)

    async def aclose(self, grace: float = 20.0) -> None:
        """Shut down in order, once no new requests arrive (the transports are closed): let acked
        listener work finish (up to `grace` seconds, so an acked command is still stored), stop the
        runner (letting uploads finish, up to `grace`), let App Home publishes under way finish, cancel
        any other background task, then close every client and the store."""
        await self.listeners.drain(grace)
        await self.runner.stop(grace)
        await self.history.close(min(grace, HOME_PUBLISH_GRACE))
        await self.tasks.drain(min(grace, HOME_PUBLISH_GRACE))
        await self.oxen.aclose()
        await self.http.close()
        await self.store.close()
