"""`python -m bot`: load settings, start Dreamboard, and stop cleanly on SIGTERM or Ctrl-C."""

from __future__ import annotations

import asyncio
import logging
import signal
import sys

import handlers
from bot.app import runtime
from bot.app.config import Settings, SettingsError, load_settings
from bot.app.logs import configure_logging

log = logging.getLogger("bot")


async def serve(settings: Settings) -> None:
    """Run until SIGTERM/SIGINT, then shut down in order."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    running = await runtime.start(settings, register=handlers.register)
    await stop.wait()
    log.info("shutting down: no new work; letting uploads finish")
    await running.close()
    log.info("stopped")


def main() -> None:
    """Entry point: exits 2 with a checklist when the settings are incomplete."""
    try:
        settings = load_settings()
    except SettingsError as exc:
        print(exc.checklist(), file=sys.stderr)
        sys.exit(2)
    configure_logging(settings.log_level, settings.secret_values)
    asyncio.run(serve(settings))


if __name__ == "__main__":
    main()
