"""`python -m bot`: load settings, start Dreamboard, and stop cleanly on SIGTERM or Ctrl-C.
`python -m bot doctor [--paid] [CHANNEL ...]`: check the deployment instead (bot/app/doctor.py).

Exit codes of `python -m bot`: 0 after SIGTERM/SIGINT (at any point, start-up included), 2 when the
settings are incomplete, 3 when the database cannot be used or (SQLite) another process holds it (one
message says why and what to do); an unexpected crash exits 1."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import sys
from collections.abc import Sequence
from pathlib import Path

import handlers
from bot.app import doctor, runtime
from bot.app.config import Settings, SettingsError, load_settings
from bot.app.logs import configure_logging
from bot.domain.secrets import Redactor
from bot.store.errors import StoreOpenError

log = logging.getLogger("bot")


EXIT_STORE = 3


async def serve(settings: Settings) -> None:
    """Run until SIGTERM/SIGINT, then shut down in order. A signal during start-up (Slack or Oxen
    unreachable, Socket Mode still connecting) cancels the start, which closes what it opened."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    starting = asyncio.create_task(runtime.start(settings, register=handlers.register), name="start-up")
    stopping = asyncio.create_task(stop.wait(), name="stop-signal")
    await asyncio.wait((starting, stopping), return_when=asyncio.FIRST_COMPLETED)
    if not starting.done():
        log.info("shutting down during start-up")
        starting.cancel()
        await asyncio.gather(starting, return_exceptions=True)
        log.info("stopped")
        return
    try:
        running = starting.result()
    finally:
        stopping.cancel()
    await stop.wait()
    log.info("shutting down: no new work; letting uploads finish")
    await running.close()
    log.info("stopped")


async def doctor_until_stopped(
    settings: Settings, options: doctor.DoctorOptions
) -> list[doctor.Check] | None:
    """The doctor's checks, or None when SIGINT/SIGTERM stopped them (a test generation under way is
    cancelled at Oxen first). The handlers are installed here, so a SIGINT ignored by the parent (a
    background job) still stops the doctor."""
    task = asyncio.current_task()
    assert task is not None
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, task.cancel)
    try:
        return await doctor.diagnose(settings, options)
    except asyncio.CancelledError:
        return None


def run_doctor(settings: Settings, argv: Sequence[str]) -> int:
    """`doctor [--paid] [--manifest PATH] [CHANNEL ...]`: print the report; 0 when no check failed,
    1 when one did, 130 when interrupted."""
    parser = argparse.ArgumentParser(
        prog="python -m bot doctor", description="Check Slack and Oxen.ai settings before users do."
    )
    parser.add_argument("--paid", action="store_true", help="also run one tiny paid test generation")
    parser.add_argument("--manifest", type=Path, default=doctor.MANIFEST, help="the Slack app manifest")
    parser.add_argument("channels", nargs="*", metavar="CHANNEL", help="channel ids the bot must be in")
    args = parser.parse_args(argv)
    options = doctor.DoctorOptions(channels=tuple(args.channels), paid=args.paid, manifest=args.manifest)
    checks = asyncio.run(doctor_until_stopped(settings, options))
    if checks is None:
        print("doctor: interrupted (a test generation under way was cancelled at Oxen)", file=sys.stderr)
        return 130
    print(doctor.render(checks, Redactor(settings.secret_values)))
    return doctor.exit_code(checks)


def main(argv: Sequence[str] | None = None) -> None:
    """Entry point: exits 2 with a checklist when the settings are incomplete."""
    args = sys.argv[1:] if argv is None else list(argv)
    try:
        settings = load_settings()
    except SettingsError as exc:
        print(exc.checklist(), file=sys.stderr)
        sys.exit(2)
    configure_logging(settings.log_level, settings.secret_values)
    if args[:1] == ["doctor"]:
        sys.exit(run_doctor(settings, args[1:]))
    if args:
        print(f"unknown command {args[0]!r}: run `python -m bot` or `python -m bot doctor`", file=sys.stderr)
        sys.exit(2)
    try:
        asyncio.run(serve(settings))
    except StoreOpenError as exc:
        print(f"dreamboard cannot start: {exc}", file=sys.stderr, flush=True)
        # Nothing is open by now (the store closed its connection and thread; no client was made), so
        # skip the interpreter's teardown of every imported module, which alone takes about 0.35 s.
        logging.shutdown()
        os._exit(EXIT_STORE)


if __name__ == "__main__":
    main()
