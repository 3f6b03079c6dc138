"""Settings: defaults, validation, and the start-up checklist."""

from __future__ import annotations

from pathlib import Path

import pytest

from bot.app.config import SettingsError, load_settings

REQUIRED = {"SLACK_BOT_TOKEN": "xoxb-1-2", "OXEN_API_KEY": "oxen-key", "SLACK_SIGNING_SECRET": "secret"}


def configure(monkeypatch: pytest.MonkeyPatch, **values: str) -> None:
    for name, value in {**REQUIRED, **values}.items():
        monkeypatch.setenv(name, value)


def test_defaults_match_the_design_table(monkeypatch: pytest.MonkeyPatch) -> None:
    configure(monkeypatch)
    settings = load_settings()
    assert settings.slack_api_url == "https://slack.com/api/"
    assert settings.slack_file_hosts == ("files.slack.com",)
    assert settings.oxen_api_url == "https://hub.oxen.ai/api"
    assert settings.oxen_model == "bytedance-seedream-4-5"
    assert settings.oxen_size == "2K"
    assert settings.reference_hosting == "auto"
    assert settings.database_path == Path("data/dreamboard.sqlite3")
    assert (settings.host, settings.port) == ("0.0.0.0", 3000)  # noqa: S104
    assert (settings.max_concurrent_jobs, settings.max_active_per_user, settings.max_queued_per_user) == (
        8,
        3,
        10,
    )
    assert settings.log_level == "INFO"
    assert not settings.socket_mode


def test_app_token_selects_socket_mode_without_signing_secret(monkeypatch: pytest.MonkeyPatch) -> None:
    configure(monkeypatch, SLACK_APP_TOKEN="xapp-1-2")
    monkeypatch.delenv("SLACK_SIGNING_SECRET")
    assert load_settings().socket_mode


def test_every_problem_is_listed_at_once(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PORT", "http")
    monkeypatch.setenv("SLACK_APP_TOKEN", "xoxb-wrong-kind")
    monkeypatch.setenv("SLACK_API_URL", "http://slack.example.com/api/")
    with pytest.raises(SettingsError) as caught:
        load_settings()
    checklist = caught.value.checklist()
    for fragment in (
        "SLACK_BOT_TOKEN: missing",
        "OXEN_API_KEY: missing",
        "PORT:",
        "SLACK_APP_TOKEN: must be an app-level token",
        "SLACK_API_URL: must use https",
    ):
        assert fragment in checklist


def test_http_mode_needs_the_signing_secret(monkeypatch: pytest.MonkeyPatch) -> None:
    configure(monkeypatch)
    monkeypatch.delenv("SLACK_SIGNING_SECRET")
    with pytest.raises(SettingsError, match="SLACK_SIGNING_SECRET: missing"):
        load_settings()


def test_hosting_strategies_need_their_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    configure(monkeypatch, REFERENCE_HOSTING="public_url")
    with pytest.raises(SettingsError, match="PUBLIC_BASE_URL: required"):
        load_settings()


def test_file_hosts_are_split_and_loopback_http_is_allowed(monkeypatch: pytest.MonkeyPatch) -> None:
    configure(
        monkeypatch, SLACK_FILE_HOSTS=" files.slack.com , 127.0.0.1 ", SLACK_API_URL="http://127.0.0.1:9/api/"
    )
    settings = load_settings()
    assert settings.slack_file_hosts == ("files.slack.com", "127.0.0.1")


def test_secrets_do_not_show_in_repr(monkeypatch: pytest.MonkeyPatch) -> None:
    configure(monkeypatch)
    assert "xoxb-1-2" not in repr(load_settings())
    assert "oxen-key" not in repr(load_settings())


def test_kit_admins_are_a_comma_list_of_user_ids(monkeypatch: pytest.MonkeyPatch) -> None:
    configure(monkeypatch)
    assert load_settings().kit_admins == frozenset()
    configure(monkeypatch, KIT_ADMINS=" U0123ABCD, W0456EFGH ,")
    assert load_settings().kit_admins == {"U0123ABCD", "W0456EFGH"}
    configure(monkeypatch, KIT_ADMINS="U0123ABCD,@alice")
    with pytest.raises(SettingsError, match=r"KIT_ADMINS: .*'@alice' is not a Slack user id"):
        load_settings()


def test_price_per_image_defaults_to_the_market_price(monkeypatch: pytest.MonkeyPatch) -> None:
    configure(monkeypatch)
    assert load_settings().oxen_price_per_image == 0.04
    configure(monkeypatch, OXEN_PRICE_PER_IMAGE="0.052")
    assert load_settings().oxen_price_per_image == 0.052
    configure(monkeypatch, OXEN_PRICE_PER_IMAGE="-1")
    with pytest.raises(SettingsError, match="OXEN_PRICE_PER_IMAGE: "):
        load_settings()
