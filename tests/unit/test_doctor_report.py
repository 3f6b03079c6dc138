"""The doctor's pure parts: reading the manifest's bot scopes, and rendering the report."""

from __future__ import annotations

from pathlib import Path

import pytest

from bot.app.doctor import Check, Mark, exit_code, failed, info, manifest_bot_scopes, passed, render, skipped
from bot.domain.secrets import Redactor
from tests.fakes.manifest import MANIFEST, bot_scopes


def test_the_doctor_reads_the_same_bot_scopes_from_manifest_yaml_as_the_fake() -> None:
    assert manifest_bot_scopes(MANIFEST) == bot_scopes()
    assert "chat:write.public" not in manifest_bot_scopes(MANIFEST)


def test_only_bot_scopes_are_read_quoted_or_commented(tmp_path: Path) -> None:
    manifest = tmp_path / "manifest.yaml"
    manifest.write_text(
        "oauth_config:\n"
        "  scopes:\n"
        "    user:\n"
        "      - search:read\n"
        "    bot:\n"
        "      # what the bot needs\n"
        "      - chat:write  # post\n"
        "      - 'files:write'\n"
        "settings:\n"
        "  event_subscriptions:\n"
        "    bot_events:\n"
        "      - app_mention\n"
    )
    assert manifest_bot_scopes(manifest) == {"chat:write", "files:write"}


def test_a_manifest_without_bot_scopes_is_refused(tmp_path: Path) -> None:
    manifest = tmp_path / "manifest.yaml"
    manifest.write_text("display_information:\n  name: x\n")
    with pytest.raises(ValueError, match=r"no oauth_config\.scopes\.bot"):
        manifest_bot_scopes(manifest)


def test_the_report_has_one_line_per_check_and_a_summary_naming_failures() -> None:
    checks = [
        passed("Slack auth.test", "team T"),
        failed("Oxen API key", "refused", "create a key"),
        skipped("Queue listing", "skipped (needs --paid)"),
        skipped("Oxen model", "needs a valid key"),
        info("Flag --seed", "no seed field"),
    ]
    assert render(checks, Redactor([])).splitlines() == [
        "✓ Slack auth.test: team T",
        "✗ Oxen API key: refused → fix: create a key",
        "– Queue listing: skipped (needs --paid)",
        "– Oxen model: skipped (needs a valid key)",
        "• Flag --seed: no seed field",
        "FAILED: 1 of 5 checks (Oxen API key); 2 skipped.",
    ]
    assert exit_code(checks) == 1
    assert exit_code([c for c in checks if c.mark is not Mark.FAIL]) == 0


def test_every_line_is_redacted() -> None:
    checks = [Check("Slack", Mark.FAIL, "token xoxb-1-secret and key oxen-secret-key", "not oxen-secret-key")]
    report = render(checks, Redactor(["oxen-secret-key"]))
    assert "oxen-secret-key" not in report
    assert "xoxb-1-secret" not in report
    assert report.count("[redacted]") == 3
