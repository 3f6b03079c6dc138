"""Classifying Oxen failures and the retry policy."""

from __future__ import annotations

import httpx
import pytest

from bot.backends.base import FailureKind
from bot.backends.oxen import RetryPolicy, classify_failure, error_detail
from bot.domain.secrets import Redactor


@pytest.mark.parametrize(
    ("status", "detail", "kind"),
    [
        (None, "Insufficient credits", FailureKind.CREDITS),
        (402, "Payment required", FailureKind.CREDITS),
        (
            400,
            "Getting model response error: 400 - InputTextSensitiveContentDetected",
            FailureKind.CONTENT_POLICY,
        ),
        (None, "OutputImageSensitiveContentDetected", FailureKind.CONTENT_POLICY),
        (401, "unauthenticated", FailureKind.AUTH),
        (404, "Model not found: nope", FailureKind.NOT_FOUND),
        (400, "Prompt cannot be empty", FailureKind.INVALID),
        (None, "Getting model response error: 422 - bad size", FailureKind.INVALID),
        (503, "Service Unavailable", FailureKind.UNAVAILABLE),
        (500, "Internal server error", FailureKind.UNAVAILABLE),
        (None, "Internal server error", FailureKind.PROVIDER),
        (None, "Upstream model timed out", FailureKind.PROVIDER),
        (None, "something odd happened", FailureKind.PROVIDER),
        (
            None,
            "Failed to download input image: 403 Client Error: Forbidden for url: https://x.test/a.png",
            FailureKind.REFERENCE,
        ),
        (None, "... 403 Client Error: Forbidden for url: https://x.test/a.png", FailureKind.REFERENCE),
        (
            None,
            "Getting model response error: 400 - Invalid input image: cannot identify image file",
            FailureKind.REFERENCE,
        ),
    ],
)
def test_failures_are_classified(status: int | None, detail: str, kind: FailureKind) -> None:
    error = classify_failure(status, detail, model_id="nope")
    assert error.kind is kind
    assert error.user_message


def test_messages_are_readable() -> None:
    assert "out of credits" in classify_failure(None, "Insufficient credits").user_message
    assert "content filter" in classify_failure(400, "SensitiveContentDetected").user_message
    assert "`nope`" in classify_failure(404, "Model not found: nope", model_id="nope").user_message
    assert "Prompt cannot be empty" in classify_failure(400, "Prompt cannot be empty").user_message


@pytest.mark.parametrize("status", [404, 405])
def test_a_missing_queue_route_is_named_and_other_routes_404_are_not(status: int) -> None:
    missing = classify_failure(status, "Not Found", route="queue")
    assert missing.kind is FailureKind.NOT_FOUND
    assert f"HTTP {status} from `POST /ai/queue`" in missing.user_message
    assert "OXEN_API_URL" in missing.user_message
    assert classify_failure(404, "Model not found: nope", route="queue").user_message == (
        "Oxen.ai has no model called `nope`."
    )
    assert "queue" not in classify_failure(status, "Not Found", route="poll").user_message


@pytest.mark.parametrize(
    ("body", "detail"),
    [
        (
            {"error": {"type": "invalid_params", "title": "Invalid", "detail": "size must be 2K"}},
            "size must be 2K",
        ),
        ({"error": {"message": "Model not found: x"}}, "Model not found: x"),
        ({"error": {"type": "unauthenticated", "title": "Not signed in"}}, "Not signed in"),
        ({"error": "Insufficient credits"}, "Insufficient credits"),
    ],
)
def test_error_detail_reads_both_envelopes(body: object, detail: str) -> None:
    assert error_detail(httpx.Response(400, json=body)) == detail


def test_error_detail_of_non_json() -> None:
    assert error_detail(httpx.Response(502, text="Bad Gateway")) == "Bad Gateway"


def test_retry_after_wins_and_is_capped() -> None:
    policy = RetryPolicy(max_retry_after=30)
    assert policy.delay(1, "2") == 2.0
    assert policy.delay(1, "0.5") == 0.5
    assert policy.delay(1, "3600") == 30


def test_backoff_is_jittered_and_bounded() -> None:
    policy = RetryPolicy(base_delay=0.5, max_delay=4)
    for attempt in range(1, 8):
        delays = {policy.delay(attempt) for _ in range(50)}
        assert all(0 <= delay <= min(4, 0.5 * 2 ** (attempt - 1)) for delay in delays)
        assert len(delays) > 1
    assert 0 <= policy.delay(1, "Wed, 21 Oct 2026 07:28:00 GMT") <= 0.5


def test_a_provider_failure_is_not_called_a_refusal_and_wraps_nothing() -> None:
    message = classify_failure(None, "Internal server error").user_message
    assert "refused" not in message
    assert message.count("Internal server error") == 1
    assert "provider" in message


def test_secrets_and_token_shapes_are_redacted() -> None:
    redactor = Redactor(["oxen-secret-key", "short"])
    text = redactor.redact("key oxen-secret-key, Bearer abc.def, xoxb-1-2-3 and short stays")
    assert text == "key [redacted], [redacted], [redacted] and short stays"


def test_a_reference_oxen_could_not_fetch_is_named_once_without_its_signed_link() -> None:
    detail = (
        "Failed to download input image: 401 Client Error: Unauthorized for url: "
        "https://bot.example.com/refs/abc.png?exp=1700000000&sig=deadbeef"
    )
    message = classify_failure(None, detail).user_message
    assert "HTTP 401 Unauthorized" in message
    assert "python -m bot doctor" in message
    assert "sig=" not in message
    assert "deadbeef" not in message
    assert message.count("Oxen.ai") == 1


def test_urls_in_oxen_text_keep_only_their_host() -> None:
    message = classify_failure(400, "bad thing at https://hub.test/results/x.png?sig=secret").user_message
    assert "https://hub.test/…" in message
    assert "secret" not in message


def test_words_after_bearer_in_a_prompt_are_not_taken_for_a_credential() -> None:
    redactor = Redactor([])
    assert redactor.redact("the Bearer of gifts, a torch Bearer") == "the Bearer of gifts, a torch Bearer"
    assert redactor.redact("Authorization: Bearer sk_live_12345") == "Authorization: [redacted]"
    assert redactor.redact("Bearer abcdefghijklmnopqrstuvwxyz") == "[redacted]"
