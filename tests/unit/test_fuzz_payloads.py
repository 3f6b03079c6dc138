"""Fuzzing what Slack delivers: commands, block actions, view submissions and events with fields
missing, odd or oversized, signed and sent over loopback to a whole bot (tests/scenarios/harness.py).

Each example must end without an ERROR or a traceback in the log (so the listener error handler never
saw an exception), and a command, action or view submission Slack accepted must be answered: a body in
the ack, a Slack call that answers someone (ephemeral, message, response_url, modal), or a new job.
The bot runs on an event loop of its own thread, so hypothesis's synchronous examples can drive it.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import json
import logging
import sqlite3
import threading
from collections.abc import Coroutine, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlencode

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from slack_sdk.errors import SlackApiError
from slack_sdk.web.slack_response import SlackResponse

from bot.slack.errors import SlackErrorKind, classify
from tests.fakes.oxen import FakeOxen
from tests.fakes.slack import FakeSlack
from tests.scenarios.harness import Harness, answers
from tests.scenarios.test_actions import button

T = TypeVar("T")

FUZZ = settings(
    derandomize=True,
    max_examples=40,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
"""Deterministic and bounded for CI: the same 40 examples per kind on every run (a few seconds each)."""

ANSWERING = frozenset(
    {"chat.postEphemeral", "chat.postMessage", "response_url", "views.open", "views.update", "views.push"}
)
"""Slack calls that put something in front of the person who asked."""
ODD_TEXT = ["", " ", "x" * 10_000, "<!channel>", "\x00", "é", "9" * 5000, "U1", "C1", "null", "{}", "[]"]

odd_strings = st.one_of(st.text(max_size=30), st.sampled_from(ODD_TEXT))
odd_values = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**63), max_value=2**63),
    st.floats(allow_nan=False, allow_infinity=False),
    odd_strings,
    st.lists(st.integers(), max_size=3),
    st.dictionaries(st.text(max_size=5), st.text(max_size=5), max_size=3),
)


def paths(value: Any, prefix: tuple[Any, ...] = (), depth: int = 4) -> list[tuple[Any, ...]]:
    """Every key path into `value` (dict keys, the first two list items) down to `depth` levels."""
    found: list[tuple[Any, ...]] = []
    if depth == 0:
        return found
    children: list[tuple[Any, Any]] = []
    if isinstance(value, dict):
        children = list(value.items())
    elif isinstance(value, list):
        children = list(enumerate(value[:2]))
    for key, child in children:
        found.append((*prefix, key))
        found.extend(paths(child, (*prefix, key), depth - 1))
    return found


@dataclass(frozen=True)
class Mutation:
    """Delete the field at `path`, or set it to `value`."""

    path: tuple[Any, ...]
    delete: bool
    value: Any = None

    def apply(self, payload: dict[str, Any]) -> None:
        """Change `payload` in place (a path some earlier mutation removed is skipped)."""
        holder: Any = payload
        for key in self.path[:-1]:
            try:
                holder = holder[key]
            except (KeyError, IndexError, TypeError):
                return
        last = self.path[-1]
        if isinstance(holder, dict):
            if self.delete:
                holder.pop(last, None)
            else:
                holder[last] = self.value
        elif isinstance(holder, list) and isinstance(last, int) and last < len(holder):
            if self.delete:
                del holder[last]
            else:
                holder[last] = self.value


def mutations(base: dict[str, Any], values: st.SearchStrategy[Any]) -> st.SearchStrategy[list[Mutation]]:
    """One to three changes to fields of `base`."""
    one = st.builds(Mutation, path=st.sampled_from(paths(base)), delete=st.booleans(), value=values)
    return st.lists(one, min_size=1, max_size=3)


@dataclass
class Outcome:
    """What one delivery led to."""

    status: int
    text: str
    answered: list[str]
    new_jobs: int
    problems: list[str]


@dataclass
class ThreadedBot:
    """A harness bot on a loop in another thread; `run` waits for a coroutine there."""

    loop: asyncio.AbstractEventLoop = field(default_factory=asyncio.new_event_loop)
    harness: Harness | None = None
    base: dict[str, dict[str, Any]] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)

    def run(self, coro: Coroutine[Any, Any, T], timeout: float = 30.0) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    @property
    def bot(self) -> Harness:
        assert self.harness is not None
        return self.harness

    def jobs(self) -> int:
        with contextlib.closing(sqlite3.connect(self.bot.database, timeout=5)) as db:
            return int(db.execute("SELECT count(*) FROM generations").fetchone()[0])

    async def deliver(self, body: str, content_type: str) -> Outcome:
        """Send a signed body, wait for every listener it started, and collect what followed."""
        bot = self.bot
        assert bot.running is not None
        calls, problems, jobs = len(bot.slack.calls), len(self.problems), self.jobs()
        response = await bot.slack.post_signed(bot.events_url, body, content_type=content_type)
        await bot.running.services.listeners.settled()
        answered = [call.method for call in answers(bot.slack.calls[calls:]) if call.method in ANSWERING]
        return Outcome(response.status, response.text, answered, self.jobs() - jobs, self.problems[problems:])


class Problems(logging.Handler):
    """Collects ERROR records, tracebacks, and warnings that an answer to the user failed."""

    def __init__(self, into: list[str]) -> None:
        super().__init__(logging.WARNING)
        self._into = into

    def emit(self, record: logging.LogRecord) -> None:
        if record.levelno >= logging.ERROR or record.exc_info or record.name == "bot.app.listener_errors":
            self._into.append(f"{record.levelname} {record.name}: {record.getMessage()}")


async def _start(threaded: ThreadedBot, data: Path, stack: contextlib.AsyncExitStack) -> None:
    slack = await stack.enter_async_context(FakeSlack())
    oxen = await stack.enter_async_context(FakeOxen())
    harness = Harness(slack, oxen, data / "dreamboard.sqlite3")
    await harness.start()
    stack.push_async_callback(harness.stop, 1.0)
    threaded.harness = harness
    root = await harness.generate("a red fox --seed 40")
    [*_, (job, _)] = await harness.jobs()
    card = slack.message("C1", str(job.status_ts))
    edit = button(card, "edit")
    threaded.base["block_actions"] = slack.button_payload(edit, user_id="U2", channel_id="C1", message=card)
    await slack.send_action(harness.events_url, threaded.base["block_actions"])
    [opened] = await slack.wait_for("views.open")
    view = opened.params["view"]
    view = json.loads(view) if isinstance(view, str) else view
    values = {
        "prompt": {"value": {"type": "plain_text_input", "value": "a blue fox"}},
        "seed": {"value": {"type": "plain_text_input", "value": "5"}},
    }
    threaded.base["view_submission"] = slack.view_submission_payload(view, values, user_id="U2")
    message = slack.human_message("C1", "now at dusk", thread_ts=root)
    threaded.base["message"] = slack.event_envelope(message)
    threaded.base["app_mention"] = slack.event_envelope(slack.app_mention(message))
    reaction = slack.reaction_event("repeat", user="U2", channel="C1", ts=str(job.status_ts))
    threaded.base["reaction_added"] = slack.event_envelope(reaction)
    await harness.running.services.listeners.settled() if harness.running else None


@pytest.fixture(scope="module")
def threaded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ThreadedBot]:
    """One bot for every example of this module (starting one per example would take minutes)."""
    threaded = ThreadedBot()
    thread = threading.Thread(target=threaded.loop.run_forever, name="fuzzed-bot", daemon=True)
    thread.start()
    stack = contextlib.AsyncExitStack()
    handler = Problems(threaded.problems)
    logging.getLogger().addHandler(handler)
    try:
        threaded.run(_start(threaded, tmp_path_factory.mktemp("fuzz"), stack), timeout=60)
        threaded.problems.clear()
        yield threaded
    finally:
        logging.getLogger().removeHandler(handler)
        threaded.run(stack.aclose(), timeout=60)
        threaded.loop.call_soon_threadsafe(threaded.loop.stop)
        thread.join(10)
        threaded.loop.close()


def check(outcome: Outcome, *, answers_required: bool) -> None:
    """No failure in the log; a request Slack awaits an answer to got one (or was refused as odd)."""
    assert not outcome.problems, outcome.problems
    assert outcome.status in (200, 400, 404), outcome
    if outcome.status == 200 and answers_required:
        assert outcome.text or outcome.answered or outcome.new_jobs, f"nothing answered: {outcome}"


def command_fields(slack: FakeSlack) -> dict[str, str]:
    return slack.command_payload("a fox --ar 16:9")


@FUZZ
@given(st.data())
def test_fuzzed_commands_are_answered(threaded: ThreadedBot, data: st.DataObject) -> None:
    slack = threaded.bot.slack
    payload: dict[str, Any] = dict(command_fields(slack))
    text = data.draw(st.one_of(odd_strings, st.sampled_from(["history 5", "show 0123456789", "help"])))
    payload["text"] = text
    for mutation in data.draw(mutations(payload, odd_strings)):
        mutation.apply(payload)
    outcome = threaded.run(threaded.deliver(urlencode(payload), "application/x-www-form-urlencoded"))
    check(outcome, answers_required=True)


@FUZZ
@given(st.data())
def test_fuzzed_button_clicks_are_answered(threaded: ThreadedBot, data: st.DataObject) -> None:
    payload = copy.deepcopy(threaded.base["block_actions"])
    payload["response_url"] = threaded.bot.slack.new_response_url()
    for mutation in data.draw(mutations(payload, odd_values)):
        mutation.apply(payload)
    body = urlencode({"payload": json.dumps(payload)})
    outcome = threaded.run(threaded.deliver(body, "application/x-www-form-urlencoded"))
    check(outcome, answers_required=True)


@FUZZ
@given(st.data())
def test_fuzzed_view_submissions_are_answered(threaded: ThreadedBot, data: st.DataObject) -> None:
    payload = copy.deepcopy(threaded.base["view_submission"])
    for mutation in data.draw(mutations(payload, odd_values)):
        mutation.apply(payload)
    body = urlencode({"payload": json.dumps(payload)})
    outcome = threaded.run(threaded.deliver(body, "application/x-www-form-urlencoded"))
    check(outcome, answers_required=True)


@FUZZ
@given(st.sampled_from(["message", "app_mention", "reaction_added"]), st.data())
def test_fuzzed_events_never_fail(threaded: ThreadedBot, kind: str, data: st.DataObject) -> None:
    payload = copy.deepcopy(threaded.base[kind])
    payload["event_id"] = f"Ev{data.draw(st.integers(min_value=0, max_value=10**12))}"
    for mutation in data.draw(mutations(payload, odd_values)):
        mutation.apply(payload)
    outcome = threaded.run(threaded.deliver(json.dumps(payload), "application/json"))
    check(outcome, answers_required=False)


def test_a_slack_error_page_that_is_not_json_is_classified() -> None:
    """Found by the fuzzer: an HTTP 500 whose body is a page, not JSON (Slack serves HTML on outages),
    made `classify` fail with AttributeError, so the user heard of an internal error instead."""
    page = SlackResponse(
        client=None,
        http_verb="POST",
        api_url="https://slack.com/api/chat.postMessage",
        req_args={},
        data="<html>Server got itself in trouble</html>",  # type: ignore[arg-type]
        headers={},
        status_code=500,
    )
    error = classify(SlackApiError("The request to the Slack API failed.", page))  # type: ignore[no-untyped-call]
    assert (error.kind, error.code) == (SlackErrorKind.UNAVAILABLE, "http_500")
