"""Fuzzing `/imagine` text: parse_command and parse_request never fail unexpectedly; every text is a
subcommand, a parsed request, or an error message for the user."""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bot.domain.commands import Command, Help, History, Prompt, Recipe, Show, UsageError, parse_command
from bot.domain.requests import GenerationRequest, Limits, RequestError, parse_request

FUZZ = settings(
    derandomize=True,
    max_examples=300,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)
"""Deterministic and bounded for CI (no example database, the same examples on every run)."""

WORDS = [
    "show",
    "seed",
    "history",
    "export",
    "help",
    "--help",
    "--",
    "—",
    "–",
    "a",
    "fox",
    "0123456789",
    "abcdef0123",
    "42",
    "0",
    "-1",
    "2147483647",
    "2147483648",
    "²",
    "١٢",
    "٣",
    "𝟗",
    "9" * 5000,
    "--ar",
    "--aspect",
    "—ar",
    "--ar=16:9",
    "16x9",
    "--size",
    "4k",
    "--seed",
    "--seed=",
    "--n",
    "--n=4",
    "--model",
    "bytedance-seedream-4-5",
    "--fresh",
    "--fresh=1",
    "--unknown",
    "--ar=",
    "=",
    "<@U1>",
    "<!channel>",
    "<!subteam^S1|@team>",
    "<https://x.test|link>",
    "&lt;",
    "&amp;",
    "<",
    ">",
    "\n",
    "\u00a0",
    "\u2028",
    "\x00",
    "`",
    "*",
    "x" * 4001,
]
# Pieces with their separators, so texts mix known shapes with arbitrary characters.
texts = st.one_of(
    st.text(max_size=200),
    st.tuples(
        st.sampled_from(["show", "seed", "history", "History", "--", "help"]),
        st.lists(st.one_of(st.sampled_from(WORDS), st.text(max_size=6)), max_size=4),
    ).map(lambda parts: " ".join([parts[0], *parts[1]])),
    st.lists(st.one_of(st.sampled_from(WORDS), st.text(max_size=8)), max_size=12).map(" ".join),
    st.lists(st.sampled_from(WORDS), min_size=1, max_size=8).map("\n".join),
)


def outcome(text: str, limits: Limits | None = None) -> Command | GenerationRequest | RequestError:
    """What the bot makes of `/imagine <text>` before it touches Slack or the store."""
    command = parse_command(text)
    if not isinstance(command, Prompt):
        return command
    try:
        return parse_request(command.text, limits or Limits())
    except RequestError as error:
        return error


@FUZZ
@given(texts)
def test_any_text_is_a_command_a_request_or_a_message(text: str) -> None:
    result = outcome(text)
    assert isinstance(result, Help | Show | Recipe | History | UsageError | GenerationRequest | RequestError)
    if isinstance(result, RequestError | UsageError):
        message = str(result) if isinstance(result, RequestError) else result.message
        assert message.strip()
    if isinstance(result, GenerationRequest):
        assert result.prompt.strip()
        assert len(result.prompt) <= Limits().prompt_max
    if isinstance(result, History) and result.words and result.words[0].isdigit():
        assert result.words[0].isascii(), "handlers/commands.py reads it with int()"


@FUZZ
@given(st.text(max_size=60), st.integers(min_value=1, max_value=4000))
def test_any_flag_value_is_read_or_refused_with_a_message(value: str, prompt_max: int) -> None:
    limits = Limits(prompt_max=prompt_max)
    for flag in ("--ar", "--size", "--seed", "--n", "--model"):
        for text in (f"a fox {flag} {value}", f"a fox {flag}={value}"):
            result = outcome(text, limits)
            assert isinstance(result, GenerationRequest) or str(result).strip()


def test_digits_other_than_ascii_are_not_numbers() -> None:
    """Found by the fuzzer: `str.isdigit` takes "²", which `int` refuses (`/imagine history ² a` failed)."""
    assert parse_command("history ² a fox") == Prompt("history ² a fox")
    assert parse_command("history ²") == Prompt("history ²")
    assert parse_command("seed ² a fox") == Prompt("seed ² a fox")
    assert parse_command("history 3 foxes") == History(("3", "foxes"))


def test_numbers_too_long_for_int_are_not_counts() -> None:
    """Python's int() refuses strings of more than 4300 digits."""
    huge = "9" * 5000
    assert parse_command(f"history {huge} a fox") == Prompt(f"history {huge} a fox")
    assert parse_command(f"history {huge}") == History((huge,))
    assert parse_command("history 0003 foxes") == History(("0003", "foxes"))
