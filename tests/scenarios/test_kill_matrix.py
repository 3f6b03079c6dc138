"""The kill -9 matrix (issue 10, item 7): the real `python -m bot` is killed with SIGKILL at each step of
a job, a new process starts on the same SQLite file, and every job still ends with exactly one paid
generation per image, one upload message in its thread and one result card (its status message, rewritten
in place).

The fakes run in this process; the bot runs in HTTP mode in a subprocess. Each stage is reached by a
fault or a hold, and proven by the call the fake recorded (never by sleeping). Faults whose delay no
test waits out are one-shot, so the second process never meets them.
"""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from bot.store.model import ImageState, JobState
from tests.fakes.oxen import SCHEMA_CURRENT, FakeOxen
from tests.fakes.slack import FakeSlack
from tests.scenarios import replicas
from tests.scenarios.harness import StoredJob, is_card, stored_jobs

LONG = 60.0
"""A fault delay no test waits out: the process is killed while it waits."""
WAIT = 20.0
"""How long to wait for a call that proves a stage (four copies of this file may share two cores)."""
CHANNEL = "C1"


class BotProcess(replicas.BotProcess):
    """`python -m bot` (HTTP mode) against the fakes on one SQLite file: started, killed with SIGKILL,
    started again on the same database file; Slack's requests go straight to it."""

    def __init__(self, slack: FakeSlack, oxen: FakeOxen, data: Path) -> None:
        self.database = data / "dreamboard.sqlite3"
        super().__init__(slack, oxen, data, {"DATABASE_PATH": str(self.database)})

    async def start(self, **settings: str) -> None:
        """Start a process (see replicas.BotProcess.start) and send Slack's events to it."""
        await super().start(**settings)
        self.slack.events_url = f"{self.url}/slack/events"

    async def command(self, text: str, *, user: str = "U1") -> None:
        """`/imagine <text>`, signed, as Slack sends it."""
        response = await self.slack.send_command(
            f"http://127.0.0.1:{self.port}/slack/events", text, user_id=user, channel_id=CHANNEL
        )
        assert response.status == 200, response.text

    def states(self) -> list[tuple[str, str | None, str | None]]:
        """(state, status_ts, card_ts) of every stored job, oldest first, read synchronously through a
        separate connection (for predicates re-checked at each recorded call)."""
        with contextlib.closing(sqlite3.connect(self.database, timeout=5)) as db:
            rows = db.execute("SELECT state, status_ts, card_ts FROM generations ORDER BY created_at, rowid")
            return [(str(state), status_ts, card_ts) for state, status_ts, card_ts in rows]

    async def jobs(self) -> list[StoredJob]:
        """Every stored job with its images, read through a separate connection to the file."""
        return await stored_jobs(self.database)

    async def settled(self, *, timeout: float = WAIT) -> list[StoredJob]:
        """Wait until every stored job has ended, an uploaded one only once its card_ts is stored, and
        every share Slack owes has landed. Checked at every Slack call, share and line the bot logs (the
        card's ts is stored after Slack answered, and logged; no Slack call follows it)."""

        def ended() -> bool:
            states = self.states()
            return (
                bool(states)
                and not self.slack.shares_pending()
                and all(
                    state in (JobState.FAILED, JobState.CANCELLED) or (state == JobState.UPLOADED and card)
                    for state, _, card in states
                )
            )

        try:
            await self.slack.recorder.wait_until(ended, timeout=timeout)
        except TimeoutError:
            raise AssertionError(f"jobs did not end: {self.states()}\n{self.log()}") from None
        return await self.jobs()


@pytest.fixture
async def bot(fake_slack: FakeSlack, fake_oxen: FakeOxen, tmp_path: Path) -> AsyncIterator[BotProcess]:
    """A bot process helper; whatever process is left is killed after the test."""
    process = BotProcess(fake_slack, fake_oxen, tmp_path / "data")
    try:
        yield process
    finally:
        await process.close()


def assert_each_delivered_once(bot: BotProcess, jobs: list[StoredJob]) -> None:
    """See replicas.assert_each_delivered_once."""
    replicas.assert_each_delivered_once(bot.slack, bot.oxen, jobs, log=bot.log())


# -- the stages ----------------------------------------------------------------------------------------
# Each drive() takes a fresh job to its stage and returns once the fakes have seen the call that proves
# it; at_kill() then checks the step log the killed process left behind.


async def waiting_for_a_slot(bot: BotProcess) -> None:
    bot.oxen.hold()
    await bot.command("first job holds the only slot", user="UA")
    await bot.oxen.recorder.wait_for("GET /ai/queue/{id}", timeout=WAIT)
    await bot.command("second job waits for a slot", user="UB")
    await bot.slack.wait_for("chat.postMessage", count=2, timeout=WAIT)
    # Its status message is recorded, the job queued behind it; re-checked at each poll of the first job.
    await bot.oxen.recorder.wait_until(
        lambda: [ts is not None for _, ts, _ in bot.states()] == [True] * 2, WAIT
    )


def left_waiting_for_a_slot(jobs: list[StoredJob], bot: BotProcess) -> None:
    (first, first_images), (second, second_images) = jobs
    assert first.state is JobState.RUNNING
    assert first_images[0].generation_id is not None
    assert second.state is JobState.QUEUED
    assert second.status_ts is not None
    assert second_images[0].submit_started_at is None


async def before_submit(bot: BotProcess) -> None:
    # Held while the job's model schema is read (its plan): announced, holding a slot, before the
    # submission marker and POST /ai/queue. A second model is used because the default model's schema
    # is fetched (and cached) at start-up.
    bot.oxen.add_model("another-image-model", SCHEMA_CURRENT)
    bot.oxen.fault("GET /ai/models", delay=LONG)
    await bot.command("a fox killed before its submission --model another-image-model")
    await bot.oxen.recorder.wait_for(
        "GET /ai/models/{id}", where=lambda call: call.params["model_id"] == "another-image-model"
    )


def left_before_submit(jobs: list[StoredJob], bot: BotProcess) -> None:
    [(job, [image])] = jobs
    assert job.state is JobState.QUEUED
    assert job.status_ts is not None
    assert (image.state, image.submit_started_at) == (ImageState.PENDING, None)


async def submit_unprocessed(bot: BotProcess) -> None:
    bot.oxen.fault("POST /ai/queue", delay=LONG, times=2)
    await bot.command("two foxes whose submissions never arrive --n 2")
    await bot.oxen.recorder.wait_for("POST /ai/queue", count=2, timeout=WAIT)


def left_submit_unprocessed(jobs: list[StoredJob], bot: BotProcess) -> None:
    [(job, images)] = jobs
    assert job.state is JobState.RUNNING
    assert all(image.submission_unknown for image in images)
    assert bot.oxen.generations == {}


async def submit_answer_lost(bot: BotProcess) -> None:
    bot.oxen.fault("POST /ai/queue", after=True, delay=LONG, times=2)
    await bot.command("two foxes whose submissions are answered too late --n 2")
    await bot.oxen.recorder.wait_for("POST /ai/queue", count=2, timeout=WAIT)


def left_submit_answer_lost(jobs: list[StoredJob], bot: BotProcess) -> None:
    [(job, images)] = jobs
    assert job.state is JobState.RUNNING
    assert all(image.submission_unknown for image in images)
    assert len(bot.oxen.generations) == 2


async def polling(bot: BotProcess) -> None:
    bot.oxen.hold()
    await bot.command("a fox still being painted")
    await bot.oxen.recorder.wait_for("GET /ai/queue/{id}", timeout=WAIT)


def left_polling(jobs: list[StoredJob], bot: BotProcess) -> None:
    [(job, [image])] = jobs
    assert job.state is JobState.RUNNING
    assert image.state is ImageState.SUBMITTED
    assert image.generation_id is not None


async def downloading(bot: BotProcess) -> None:
    bot.oxen.fault("GET result", delay=LONG)
    await bot.command("a fox being downloaded")
    await bot.oxen.recorder.wait_for("GET result", timeout=WAIT)


def left_downloading(jobs: list[StoredJob], bot: BotProcess) -> None:
    [(job, [image])] = jobs
    assert job.state is JobState.RUNNING
    assert image.state is ImageState.SUCCEEDED
    assert image.result_url is not None
    assert image.file_id is None


async def upload_in_flight(bot: BotProcess) -> None:
    bot.slack.fault("upload", delay=LONG)
    await bot.command("a fox whose bytes are on their way")
    await bot.slack.wait_for("upload", timeout=WAIT)


def left_upload_in_flight(jobs: list[StoredJob], bot: BotProcess) -> None:
    [(job, [image])] = jobs
    assert job.state is JobState.RUNNING
    assert image.state is ImageState.SUCCEEDED
    assert image.file_id is None


async def complete_answer_lost(bot: BotProcess) -> None:
    bot.slack.fault("files.completeUploadExternal", after=True, delay=LONG)
    await bot.command("a fox shared but not told so")
    await bot.slack.wait_for("files.completeUploadExternal", timeout=WAIT)


def left_complete_answer_lost(jobs: list[StoredJob], bot: BotProcess) -> None:
    [(job, [image])] = jobs
    assert job.state is JobState.RUNNING
    assert image.file_id is not None
    assert bot.slack.uploaded_files[image.file_id].completed


async def complete_unprocessed(bot: BotProcess) -> None:
    bot.slack.fault("files.completeUploadExternal", delay=LONG)
    await bot.command("a fox whose share never arrives")
    await bot.slack.wait_for("files.completeUploadExternal", timeout=WAIT)


def left_complete_unprocessed(jobs: list[StoredJob], bot: BotProcess) -> None:
    [(job, [image])] = jobs
    assert job.state is JobState.RUNNING
    assert image.file_id is not None
    assert not bot.slack.uploaded_files[image.file_id].completed


async def card_unprocessed(bot: BotProcess) -> None:
    await bot.command("a fox whose card never arrives")
    # Installed once the upload is completing: the status was posted as "Generating…" (the job started at
    # once), so the next chat.update is the card (at_kill checks that the card is the call that was held).
    await bot.slack.wait_for("files.completeUploadExternal", timeout=WAIT)
    bot.slack.fault("chat.update", delay=LONG)
    await bot.slack.wait_for("chat.update", where=is_card, timeout=WAIT)


def left_card_unprocessed(jobs: list[StoredJob], bot: BotProcess) -> None:
    [(job, _)] = jobs
    assert (job.state, job.card_ts) == (JobState.UPLOADED, None)
    assert not any("Result of job" in str(message.get("text")) for message in bot.slack.messages(CHANNEL))


async def card_answer_lost(bot: BotProcess) -> None:
    await bot.command("a fox whose card is shown but not confirmed")
    await bot.slack.wait_for("files.completeUploadExternal", timeout=WAIT)
    bot.slack.fault("chat.update", after=True, delay=LONG)
    await bot.slack.wait_for("chat.update", where=is_card, timeout=WAIT)


def left_card_answer_lost(jobs: list[StoredJob], bot: BotProcess) -> None:
    [(job, _)] = jobs
    assert (job.state, job.card_ts) == (JobState.UPLOADED, None)
    assert bot.slack.message(CHANNEL, str(job.status_ts))["text"].startswith(f"Result of job {job.id}:")


async def several_users(bot: BotProcess) -> None:
    # Three users' jobs generate at once; then the first upload POST hangs, the first share is made but
    # its answer lost, and the third job shows its card: the kill finds one job at each of those steps.
    bot.oxen.hold()
    await bot.command("alice's two foxes --n 2", user="UA")
    await bot.command("bob's owl", user="UB")
    await bot.command("carol's three cats --n 3", user="UC")
    await bot.oxen.recorder.wait_for("POST /ai/queue", count=6, timeout=WAIT)
    bot.slack.fault("upload", delay=LONG)
    bot.slack.fault("files.completeUploadExternal", after=True, delay=LONG)
    bot.oxen.release()
    await bot.slack.wait_for("chat.update", where=is_card, timeout=WAIT)


def left_several_users(jobs: list[StoredJob], bot: BotProcess) -> None:
    steps = sorted(
        "card" if job.state is JobState.UPLOADED else "share" if images[0].file_id else "upload"
        for job, images in jobs
    )
    assert steps == ["card", "share", "upload"]


@dataclass(frozen=True)
class Stage:
    """Where a job is when the process is killed."""

    drive: Callable[[BotProcess], Awaitable[None]]
    at_kill: Callable[[list[StoredJob], BotProcess], None]
    settings: dict[str, str] = field(default_factory=dict)


STAGES = [
    pytest.param(
        Stage(waiting_for_a_slot, left_waiting_for_a_slot, {"MAX_CONCURRENT_JOBS": "1"}),
        id="01-waiting-for-a-slot",
    ),
    pytest.param(Stage(before_submit, left_before_submit), id="02-before-submit"),
    pytest.param(Stage(submit_unprocessed, left_submit_unprocessed), id="03-submit-unprocessed"),
    pytest.param(Stage(submit_answer_lost, left_submit_answer_lost), id="04-submit-answer-lost"),
    pytest.param(Stage(polling, left_polling), id="05-polling"),
    pytest.param(Stage(downloading, left_downloading), id="06-downloading"),
    pytest.param(Stage(upload_in_flight, left_upload_in_flight), id="07-upload-in-flight"),
    pytest.param(Stage(complete_answer_lost, left_complete_answer_lost), id="08-complete-answer-lost"),
    pytest.param(Stage(complete_unprocessed, left_complete_unprocessed), id="09-complete-unprocessed"),
    pytest.param(Stage(card_unprocessed, left_card_unprocessed), id="10-card-update-unprocessed"),
    pytest.param(Stage(card_answer_lost, left_card_answer_lost), id="11-card-update-answer-lost"),
    pytest.param(Stage(several_users, left_several_users), id="12-several-users"),
]


@pytest.mark.parametrize("stage", STAGES)
async def test_kill_9_then_restart_delivers_each_job_exactly_once(bot: BotProcess, stage: Stage) -> None:
    await bot.start(**stage.settings)
    await stage.drive(bot)
    await bot.kill()
    stage.at_kill(await bot.jobs(), bot)

    bot.oxen.release()
    await bot.start()
    assert_each_delivered_once(bot, await bot.settled())
