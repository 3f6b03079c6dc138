"""Web API calls per delivered image: what each job costs against Slack's rate limits."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

from bench.process import start_bot
from bench.scenarios import Params, upload_ts_recorded, wait_for_event_stream
from tests.fakes.oxen import FakeOxen
from tests.fakes.slack import FakeSlack

NOT_WEB_API = frozenset({"upload", "file_download", "response_url"})
"""Recorded calls that are not Web API methods: the byte upload (not counted, as in issue 11), file
downloads and response URLs."""


async def api_calls_per_image(params: Params, folder: Path) -> dict[str, float]:
    """Single-image jobs and `--n 4` jobs one at a time, each by a user who never opened App Home, through
    the real process; every Web API call from the signed `/imagine` until its result card is shown, its
    share has landed and its file_share event was delivered, divided by the images delivered."""
    result: dict[str, float] = {}
    async with FakeSlack(keep_uploads=False) as slack, FakeOxen(latency=min(params.latency, 0.3)) as oxen:
        bot = await start_bot(slack, oxen, folder / "api-calls.sqlite3")
        try:
            await wait_for_event_stream(oxen)
            # Warm-up, not counted: Bolt's one auth.test per process comes with the first request.
            await slack.send_command(bot.events_url, "warm-up", user_id="Uwarm", channel_id="C1")
            await slack.wait_for("chat.update", where=lambda call: "warm-up" in str(call.params), timeout=60)
            await slack.wait_shared(timeout=60)
            for n, key in ((1, "single"), (4, "n4")):
                jobs, methods = 3, Counter[str]()
                for index in range(jobs):
                    prompt = f"counted {key} {index}"
                    before = len(slack.calls)
                    await slack.send_command(
                        bot.events_url, f"{prompt} --n {n}", user_id=f"Ucalls{key}{index}", channel_id="C1"
                    )
                    await slack.wait_for(
                        "chat.update",
                        where=lambda call, p=prompt: str(call.params.get("text", "")).endswith(f": {p}"),
                        timeout=60,
                    )
                    await slack.wait_shared(timeout=60)
                    await upload_ts_recorded(bot.database, prompt)
                    methods.update(c.method for c in slack.calls[before:] if c.method not in NOT_WEB_API)
                total = sum(methods.values())
                result[f"api_calls_per_image_{key}"] = total / (jobs * n)
                result[f"api_calls_per_job_{key}"] = total / jobs
                print(f"Web API calls, {jobs} × --n {n}: {dict(methods)}")
        finally:
            await bot.stop()
    return result
