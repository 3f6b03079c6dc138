"""Settings loaded from the environment, validated once at start-up."""

from __future__ import annotations

import os
import re
import socket
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import unquote, urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import (
    Field,
    ModelWrapValidatorHandler,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from bot.domain.hosts import is_loopback
from bot.domain.quotas import QuotaPolicy
from bot.store.database import database_target


class ReferenceHosting(StrEnum):
    """How reference images are made fetchable by Oxen (see README)."""

    AUTO = "auto"
    OXEN_REPO = "oxen_repo"
    PUBLIC_URL = "public_url"
    DATA_URI = "data_uri"


class Settings(BaseSettings):
    """Every environment variable Dreamboard reads, with its default."""

    model_config = SettingsConfigDict(env_file=None, extra="ignore", frozen=True)

    slack_bot_token: SecretStr
    slack_app_token: SecretStr | None = None
    slack_signing_secret: SecretStr | None = None
    slack_api_url: str = "https://slack.com/api/"
    slack_post_interval: float = Field(default=1.0, gt=0, le=10)
    slack_file_hosts: Annotated[tuple[str, ...], NoDecode] = ("files.slack.com",)
    oxen_api_key: SecretStr
    oxen_api_url: str = "https://hub.oxen.ai/api"
    oxen_model: str = "bytedance-seedream-4-5"
    oxen_size: str = "2K"
    oxen_poll_interval: float = Field(default=3.0, gt=0, le=60)
    oxen_job_timeout: float = Field(default=600.0, gt=0)
    public_base_url: str | None = None
    oxen_reference_repo: str | None = None
    reference_hosting: ReferenceHosting = ReferenceHosting.AUTO
    # Send Oxen's own result URL back as a reference for a previous result, instead of hosting the bytes.
    # Undocumented (oxen-api.md §2.3, §3.3, §9 q5: result URLs may need the key and expire, and Oxen
    # fetches references anonymously); only for a deployment where `python -m bot doctor` verified it.
    oxen_reuse_result_urls: bool = False
    max_reference_mb: float = Field(default=20.0, gt=0, le=1024)
    database_path: Path = Path("data/dreamboard.sqlite3")
    # sqlite:///path or postgresql://user:password@host/db; unset: the SQLite file DATABASE_PATH. A secret,
    # since it may hold a password.
    database_url: SecretStr | None = None
    host: str = "0.0.0.0"  # noqa: S104 - the container's HTTP server must listen on all interfaces
    port: int = Field(default=3000, ge=0, le=65535)
    max_concurrent_jobs: int = Field(default=8, ge=1, le=500)
    max_active_per_user: int = Field(default=3, ge=1, le=100)
    max_queued_per_user: int = Field(default=10, ge=0, le=1000)
    # This replica's name in job leases: unique among the replicas on one database (default: host and
    # process id). A replica restarted under the same name takes its own unfinished jobs back at once.
    replica_id: str = Field(default_factory=lambda: f"{socket.gethostname()}-{os.getpid()}", min_length=1)
    # Seconds a replica's hold on a job lasts without renewal (renewed every third of it): how long a
    # killed replica's jobs wait before another takes them over.
    lease_seconds: float = Field(default=30.0, ge=1, le=600)
    log_level: str = "INFO"
    # Seconds after a job finished before its files go into image blocks (Slack refuses a slack_file it
    # is still processing, slack.md §2.2).
    slack_file_grace: float = Field(default=30.0, ge=0, le=3600)
    # Daily image caps (0 = unlimited), counted in images with a 4K image weighing IMAGE_WEIGHT_4K; the
    # day resets at midnight in QUOTA_TIMEZONE (an IANA zone name).
    daily_images_per_user: int = Field(default=50, ge=0, le=100_000)
    daily_images_per_channel: int = Field(default=200, ge=0, le=1_000_000)
    image_weight_4k: int = Field(default=2, ge=1, le=16)
    quota_timezone: str = "UTC"
    # Who may change channel kits and read the workspace usage report (Slack user ids); empty: anyone in
    # the channel may change its kit, and only workspace admins and owners see the workspace report.
    kit_admins: Annotated[frozenset[str], NoDecode] = frozenset()
    # US$ per image for the usage report's spend estimate: Seedream 4.5's market price, any size
    # (oxen-api.md Decisions and §5.6; Oxen's own price is not published).
    oxen_price_per_image: float = Field(default=0.04, ge=0, le=100)

    @property
    def quotas(self) -> QuotaPolicy:
        """The daily caps as one policy."""
        return QuotaPolicy(
            per_user=self.daily_images_per_user,
            per_channel=self.daily_images_per_channel,
            weight_4k=self.image_weight_4k,
            tz=ZoneInfo(self.quota_timezone),
        )

    @property
    def max_reference_bytes(self) -> int:
        """MAX_REFERENCE_MB in bytes."""
        return int(self.max_reference_mb * 1024 * 1024)

    @property
    def data_dir(self) -> Path:
        """The folder holding the database and cached reference images."""
        return self.database_path.parent

    @property
    def database(self) -> Path | str:
        """Where the store lives: the SQLite file's path, or the PostgreSQL URL (DATABASE_URL when set,
        else DATABASE_PATH)."""
        if self.database_url is None:
            return self.database_path
        return database_target(self.database_url.get_secret_value())

    @property
    def secret_values(self) -> list[str]:
        """Every configured secret, for redaction in logs and in messages posted to Slack."""
        secrets = (self.slack_bot_token, self.slack_app_token, self.slack_signing_secret, self.oxen_api_key)
        values = [secret.get_secret_value() for secret in secrets if secret is not None]
        if self.database_url is not None:
            password = urlsplit(self.database_url.get_secret_value()).password
            if password:
                values += sorted({password, unquote(password)})
        return values

    @property
    def socket_mode(self) -> bool:
        """Socket Mode when an app-level token is configured, HTTP mode otherwise."""
        return self.slack_app_token is not None

    @field_validator("slack_bot_token")
    @classmethod
    def _bot_token_shape(cls, value: SecretStr) -> SecretStr:
        if not value.get_secret_value().startswith("xoxb-"):
            raise ValueError("must be a bot token starting with xoxb-")
        return value

    @field_validator("slack_app_token")
    @classmethod
    def _app_token_shape(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and not value.get_secret_value().startswith("xapp-"):
            raise ValueError("must be an app-level token starting with xapp-")
        return value

    @field_validator("database_url", mode="before")
    @classmethod
    def _unset_when_empty(cls, value: Any) -> Any:
        return None if value == "" else value

    @field_validator("database_url")
    @classmethod
    def _database_url(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None:
            database_target(value.get_secret_value())
        return value

    @field_validator("slack_file_hosts", mode="before")
    @classmethod
    def _split_hosts(cls, value: Any) -> Any:
        if isinstance(value, str):
            return tuple(host.strip().lower() for host in value.split(",") if host.strip())
        return value

    @field_validator("kit_admins", mode="before")
    @classmethod
    def _split_users(cls, value: Any) -> Any:
        if isinstance(value, str):
            return frozenset(user.strip() for user in value.split(",") if user.strip())
        return value

    @field_validator("kit_admins")
    @classmethod
    def _user_ids(cls, value: frozenset[str]) -> frozenset[str]:
        for user in value:
            if not re.fullmatch(r"[UW][A-Z0-9]{2,}", user):
                raise ValueError(f"{user!r} is not a Slack user id (like U0123ABCD)")
        return value

    @field_validator("slack_file_hosts")
    @classmethod
    def _hostnames(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for host in value:
            if not re.fullmatch(r"[a-z0-9.-]+|\[?[0-9a-f:]+\]?", host):
                raise ValueError(f"{host!r} is not a hostname")
        return value

    @field_validator("slack_api_url", "oxen_api_url", "public_base_url")
    @classmethod
    def _http_url(cls, value: str | None) -> str | None:
        if value is None:
            return None
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError("must be an http(s) URL")
        if parts.scheme == "http" and not is_loopback(parts.hostname):
            raise ValueError("must use https (plain http is only allowed for loopback hosts)")
        return value

    @field_validator("oxen_size")
    @classmethod
    def _size(cls, value: str) -> str:
        size = value.upper()
        if size not in ("2K", "4K"):
            raise ValueError("must be 2K or 4K")
        return size

    @field_validator("quota_timezone")
    @classmethod
    def _zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError("must be an IANA time zone such as UTC or America/Los_Angeles") from None
        return value

    @field_validator("oxen_reference_repo")
    @classmethod
    def _repo(cls, value: str | None) -> str | None:
        if value is not None and value.count("/") != 1:
            raise ValueError("must look like namespace/repo")
        return value

    @field_validator("log_level")
    @classmethod
    def _log_level(cls, value: str) -> str:
        level = value.upper()
        if level not in ("DEBUG", "INFO", "WARNING", "ERROR"):
            raise ValueError("must be one of DEBUG, INFO, WARNING, ERROR")
        return level

    @model_validator(mode="wrap")
    @classmethod
    def _collect_every_problem(cls, data: Any, handler: ModelWrapValidatorHandler[Settings]) -> Settings:
        """Report field errors and cross-field errors together, as one checklist."""
        cross = _cross_field_problems(data if isinstance(data, dict) else {})
        try:
            settings = handler(data)
        except ValidationError as exc:
            raise SettingsError([_describe(error) for error in exc.errors()] + cross) from None
        if cross:
            raise SettingsError(cross)
        return settings


def _cross_field_problems(raw: dict[str, Any]) -> list[str]:
    problems = []
    if not raw.get("slack_app_token") and not raw.get("slack_signing_secret"):
        problems.append(
            "SLACK_SIGNING_SECRET: missing. Without SLACK_APP_TOKEN the bot runs in HTTP mode and needs "
            "the signing secret (Basic Information → App Credentials); or set SLACK_APP_TOKEN for Socket Mode"
        )
    hosting = str(raw.get("reference_hosting", "auto")).lower()
    if hosting == ReferenceHosting.PUBLIC_URL and not raw.get("public_base_url"):
        problems.append("PUBLIC_BASE_URL: required when REFERENCE_HOSTING=public_url")
    if hosting == ReferenceHosting.OXEN_REPO and not raw.get("oxen_reference_repo"):
        problems.append("OXEN_REFERENCE_REPO: required when REFERENCE_HOSTING=oxen_repo")
    return problems


_HINTS = {
    "slack_bot_token": "the Bot User OAuth Token (xoxb-…) from OAuth & Permissions",
    "slack_app_token": "an app-level token (xapp-…) with connections:write, or leave unset for HTTP mode",
    "oxen_api_key": "your Oxen.ai API key from https://oxen.ai/settings/profile",
}


class SettingsError(Exception):
    """Start-up configuration problems, formatted as one checklist for the operator."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__("\n".join(problems))

    def checklist(self) -> str:
        """The message printed before exiting: one line per problem."""
        lines = ["Dreamboard cannot start; fix these settings (environment variables):"]
        lines += [f"  - {problem}" for problem in self.problems]
        lines.append("See the configuration table in README.md.")
        return "\n".join(lines)


def load_settings(**overrides: Any) -> Settings:
    """Read Settings from the environment; raises SettingsError listing every problem."""
    return Settings(**overrides)


def _describe(error: Any) -> str:
    location = [str(part) for part in error["loc"]]
    if not location:
        return str(error["msg"]).removeprefix("Value error, ")
    field = location[0]
    name = field.upper()
    if error["type"] == "missing":
        hint = _HINTS.get(field, "")
        return f"{name}: missing. Set it to {hint}" if hint else f"{name}: missing"
    message = str(error["msg"]).removeprefix("Value error, ")
    return f"{name}: {message}"
