"""`python -m bot doctor` against the loopback fakes: a healthy deployment passes, each broken one fails
on its own line, nothing is paid for without --paid, and no configured secret is ever printed."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from bot.app.config import Settings
from bot.app.doctor import Check, DoctorOptions, Mark, diagnose, exit_code, render
from bot.domain.secrets import Redactor
from tests.fakes.oxen import FakeOxen
from tests.fakes.slack import FakeSlack
from tests.scenarios.harness import FAST_RETRIES, Harness

ROOT = Path(__file__).parents[2]
REPO = "test-user/dreamboard-refs"


async def doctor(settings: Settings, **options: Any) -> tuple[list[Check], str]:
    """Run every check; the checks and the printed report (asserted to hold no configured secret)."""
    checks = await diagnose(settings, DoctorOptions(**options), oxen_retry=FAST_RETRIES)
    report = render(checks, Redactor(settings.secret_values))
    for secret in settings.secret_values:
        assert secret not in report
    return checks, report


def line(checks: list[Check], name: str) -> Check:
    """The one check called `name`."""
    [found] = [check for check in checks if check.name == name]
    return found


def failures(checks: list[Check]) -> list[str]:
    return [check.name for check in checks if check.mark is Mark.FAIL]


@pytest.fixture
def refused_port() -> Iterator[int]:
    """A loopback port that refuses connections: bound, never listening, held for the test."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        yield int(sock.getsockname()[1])


async def test_a_healthy_http_mode_deployment_passes_and_pays_nothing(
    harness: Harness, fake_slack: FakeSlack, fake_oxen: FakeOxen
) -> None:
    await harness.start_at_own_url()
    checks, report = await doctor(harness.settings(), channels=("C0HERE",))
    assert failures(checks) == [], report
    assert exit_code(checks) == 0
    assert f"{harness.url}/slack/events" in line(checks, "Slack HTTP mode").detail
    assert "U0BOT" in line(checks, "Slack auth.test").detail
    assert line(checks, "Slack channel C0HERE").mark is Mark.OK
    hosted = line(checks, "Reference hosting")
    assert hosted.mark is Mark.OK
    assert "served by the running bot" in hosted.detail
    assert line(checks, "Test generation").detail == "skipped (needs --paid)"
    assert line(checks, "Queue listing").mark is Mark.SKIP
    assert line(checks, "Result URL").mark is Mark.SKIP
    assert fake_oxen.submissions == []
    assert report.splitlines()[-1].startswith("OK: no check failed")


async def test_the_flags_are_described_from_the_live_schema(harness: Harness, fake_oxen: FakeOxen) -> None:
    fake_oxen.schema = "april"
    checks, _ = await doctor(harness.settings(oxen_reference_repo=REPO))
    assert "aspect_ratio (1:1, 16:9" in line(checks, "Flag --ar").detail
    assert line(checks, "Flag --seed").mark is Mark.OK
    assert line(checks, "References").detail.startswith("→ input_image (array, up to 10)")

    fake_oxen.schema = "current"
    checks, _ = await doctor(harness.settings(oxen_reference_repo=REPO, oxen_size="4K"))
    ar = line(checks, "Flag --ar")
    assert (ar.mark, "added to the prompt" in ar.detail) == (Mark.INFO, True)
    assert line(checks, "Flag --seed").mark is Mark.INFO
    assert "default 4K" in line(checks, "Flag --size").detail


async def test_socket_mode_connects_receives_hello_and_closes(
    harness: Harness, fake_slack: FakeSlack, fake_oxen: FakeOxen
) -> None:
    settings = harness.settings(slack_app_token=fake_slack.app_token, oxen_reference_repo=REPO)
    checks, report = await doctor(settings)
    assert failures(checks) == [], report
    assert line(checks, "Slack Socket Mode").detail.startswith("connected and received hello")
    await fake_slack.recorder.wait_until(lambda: not fake_slack.socket_connected(), timeout=5)
    assert fake_oxen.repo_commits == [
        f"{REPO}/main/dreamboard-references/" + fake_oxen.repo_commits[0].rsplit("/")[-1]
    ]

    await doctor(settings)
    assert len(fake_oxen.repo_commits) == 1, "the same tiny PNG is committed once"


async def test_a_refused_app_token_fails_the_socket_mode_line(harness: Harness) -> None:
    settings = harness.settings(slack_app_token="xapp-not-this-one", oxen_reference_repo=REPO)
    checks, report = await doctor(settings)
    assert failures(checks) == ["Slack Socket Mode"]
    assert "invalid_auth" in line(checks, "Slack Socket Mode").detail
    assert "connections:write" in line(checks, "Slack Socket Mode").fix
    assert "FAILED: 1 of" in report
    assert "(Slack Socket Mode)" in report


async def test_a_wrong_oxen_key_fails_and_the_schema_is_not_asked(harness: Harness) -> None:
    checks, report = await doctor(harness.settings(oxen_api_key="wrong-oxen-key", oxen_reference_repo=REPO))
    assert "Oxen API key" in failures(checks)
    assert "refused Dreamboard's API key" in line(checks, "Oxen API key").detail
    assert line(checks, "Oxen model").mark is Mark.SKIP
    assert "wrong-oxen-key" not in report
    assert exit_code(checks) == 1


async def test_a_missing_scope_is_named(harness: Harness, fake_slack: FakeSlack) -> None:
    fake_slack.scopes.discard("files:write")
    fake_slack.scopes.add("chat:write.public")
    checks, _ = await doctor(harness.settings(oxen_reference_repo=REPO))
    scopes = line(checks, "Slack scopes")
    assert failures(checks) == ["Slack scopes"]
    assert scopes.detail.startswith("missing files:write")
    assert "reinstall" in scopes.fix


async def test_a_wrong_bot_token_fails_auth_and_skips_scopes(harness: Harness) -> None:
    checks, report = await doctor(
        harness.settings(slack_bot_token="xoxb-not-the-token", oxen_reference_repo=REPO)
    )
    assert line(checks, "Slack auth.test").detail == "refused: invalid_auth"
    assert line(checks, "Slack scopes").mark is Mark.SKIP
    assert "xoxb-not-the-token" not in report


async def test_channels_the_bot_is_not_in_fail_by_name(harness: Harness, fake_slack: FakeSlack) -> None:
    fake_slack.add_channel("C0OUT", member=False)
    fake_slack.add_channel("C0SECRET", member=False, private=True)
    checks, report = await doctor(
        harness.settings(oxen_reference_repo=REPO), channels=("C0IN", "C0OUT", "C0SECRET")
    )
    assert failures(checks) == ["Slack channel C0OUT", "Slack channel C0SECRET"]
    assert "not_in_channel" in line(checks, "Slack channel C0OUT").detail
    assert "/invite" in line(checks, "Slack channel C0OUT").fix
    assert "channels:read" in line(checks, "Slack channel C0IN").detail
    assert "Slack channel C0OUT, Slack channel C0SECRET" in report.splitlines()[-1]


async def test_with_channels_read_membership_and_archiving_come_from_conversations_info(
    harness: Harness, fake_slack: FakeSlack
) -> None:
    fake_slack.scopes.add("channels:read")
    fake_slack.add_channel("C0OLD", archived=True)
    fake_slack.add_channel("C0OUT", member=False)
    checks, _ = await doctor(harness.settings(oxen_reference_repo=REPO), channels=("C0IN", "C0OLD", "C0OUT"))
    assert line(checks, "Slack channel C0IN").detail == "the bot is a member; not archived"
    assert line(checks, "Slack channel C0OLD").detail == "archived"
    assert line(checks, "Slack channel C0OUT").detail == "the bot is not a member"
    assert fake_slack.calls_to("conversations.history") == []


async def test_a_public_base_url_pointing_nowhere_fails_the_hosting_line(
    harness: Harness, refused_port: int
) -> None:
    checks, _ = await doctor(harness.settings(public_base_url=f"http://127.0.0.1:{refused_port}"))
    hosted = line(checks, "Reference hosting")
    assert failures(checks) == ["Reference hosting"]
    assert "ConnectError" in hosted.detail
    assert "not running" in hosted.detail
    assert "PUBLIC_BASE_URL" in hosted.fix


async def test_no_reference_hosting_is_a_failure_with_its_fix(harness: Harness) -> None:
    checks, _ = await doctor(harness.settings(oxen_reference_repo=None))
    assert failures(checks) == ["Reference hosting"]
    assert "OXEN_REFERENCE_REPO" in line(checks, "Reference hosting").fix


@pytest.mark.parametrize("result_auth_required", [True, False])
async def test_paid_runs_exactly_one_tiny_generation_and_reports_its_result_url(
    harness: Harness, fake_oxen: FakeOxen, result_auth_required: bool
) -> None:
    fake_oxen.result_auth_required = result_auth_required
    checks, report = await doctor(harness.settings(oxen_reference_repo=REPO), paid=True)
    assert failures(checks) == [], report
    [body] = fake_oxen.submissions
    assert (body["size"], body["num_generations"]) == ("2K", 1)
    assert line(checks, "Queue listing").mark is Mark.OK
    anonymous = line(checks, "Result URL without key")
    assert anonymous.mark is Mark.INFO
    if result_auth_required:
        assert "HTTP 401 without the key" in anonymous.detail
        assert "keep OXEN_REUSE_RESULT_URLS off" in anonymous.detail
    else:
        assert "OXEN_REUSE_RESULT_URLS=true would work" in anonymous.detail
    assert line(checks, "Result URL with key").mark is Mark.OK

    checks, _ = await doctor(harness.settings(oxen_reference_repo=REPO))
    assert len(fake_oxen.submissions) == 1, "without --paid nothing is queued"
    [generation_id] = fake_oxen.generations
    assert f"generation {generation_id}" in line(checks, "Result URL with key").detail


async def test_reusing_result_urls_that_need_the_key_is_a_failure_with_its_fix(
    harness: Harness, fake_oxen: FakeOxen
) -> None:
    checks, report = await doctor(
        harness.settings(oxen_reference_repo=REPO, oxen_reuse_result_urls=True), paid=True
    )
    assert failures(checks) == ["Result URL without key"], report
    assert "unset OXEN_REUSE_RESULT_URLS" in line(checks, "Result URL without key").fix


async def test_a_test_generation_that_does_not_finish_is_cancelled(
    harness: Harness, fake_oxen: FakeOxen
) -> None:
    fake_oxen.hold()
    checks, _ = await doctor(harness.settings(oxen_reference_repo=REPO), paid=True, generation_timeout=0.2)
    generation = line(checks, "Test generation")
    assert generation.mark is Mark.FAIL
    assert "cancelled" in generation.detail
    [(generation_id, held)] = fake_oxen.generations.items()
    assert held.status == "cancelled"
    assert [call.params for call in fake_oxen.recorder.calls_to("DELETE /ai/queue/{id}")] == [
        {"generation_id": generation_id}
    ]


def _environment(slack: FakeSlack, oxen: FakeOxen, tmp_path: Path, **extra: str) -> dict[str, str]:
    return {
        "PATH": os.environ.get("PATH", ""),
        "PYTHONPATH": str(ROOT),
        "SLACK_BOT_TOKEN": slack.bot_token,
        "SLACK_SIGNING_SECRET": slack.signing_secret,
        "SLACK_API_URL": slack.api_url,
        "OXEN_API_KEY": oxen.api_key,
        "OXEN_API_URL": oxen.url,
        "OXEN_REFERENCE_REPO": REPO,
        "DATABASE_PATH": str(tmp_path / "data" / "dreamboard.sqlite3"),
        **extra,
    }


async def _run_doctor(env: dict[str, str], *args: str) -> tuple[int, str]:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "bot",
        "doctor",
        *args,
        env=env,
        cwd=ROOT,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    out, _ = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode is not None
    return process.returncode, out.decode()


async def test_the_real_process_exits_0_when_healthy_1_naming_failures_2_without_settings(
    fake_slack: FakeSlack, fake_oxen: FakeOxen, tmp_path: Path
) -> None:
    env = _environment(fake_slack, fake_oxen, tmp_path)
    code, out = await _run_doctor(env, "C0IN")
    assert code == 0, out
    assert "✓ Slack channel C0IN" in out
    assert "OK: no check failed" in out

    fake_slack.add_channel("C0OUT", member=False)
    code, out = await _run_doctor({**env, "OXEN_API_KEY": "wrong-oxen-key"}, "C0OUT")
    assert code == 1, out
    assert out.splitlines()[-1].startswith("FAILED: 2 of")
    assert "(Slack channel C0OUT, Oxen API key)" in out
    assert "Traceback" not in out
    for secret in (fake_slack.bot_token, fake_slack.signing_secret, "wrong-oxen-key"):
        assert secret not in out

    code, out = await _run_doctor({"PATH": env["PATH"], "PYTHONPATH": str(ROOT)})
    assert code == 2
    assert "SLACK_BOT_TOKEN: missing" in out


@pytest.mark.parametrize("stop", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
async def test_ctrl_c_or_sigterm_during_the_paid_generation_cancels_it_at_oxen(
    fake_slack: FakeSlack, fake_oxen: FakeOxen, tmp_path: Path, stop: signal.Signals
) -> None:
    fake_oxen.hold()
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "bot",
        "doctor",
        "--paid",
        env=_environment(fake_slack, fake_oxen, tmp_path, OXEN_POLL_INTERVAL="0.05"),
        cwd=ROOT,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    try:
        await fake_oxen.recorder.wait_until(
            lambda: bool(fake_oxen.recorder.calls_to("GET /ai/queue/{id}")), timeout=30
        )
        process.send_signal(stop)
        out, _ = await asyncio.wait_for(process.communicate(), 30)
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    assert process.returncode == 130, out.decode()
    assert "interrupted" in out.decode()
    [generation] = fake_oxen.generations.values()
    assert generation.status == "cancelled"
    assert len(fake_oxen.submissions) == 1
