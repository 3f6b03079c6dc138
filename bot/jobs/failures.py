"""describe_failure: the one place an exception becomes the sentence a user reads about their job."""

from __future__ import annotations

from bot.backends.base import BackendError
from bot.domain.errors import UserFacingError
from bot.slack.errors import SlackError, SlackErrorKind
from bot.store.errors import StoreUnavailableError

_SLACK = {
    SlackErrorKind.NOT_IN_CHANNEL: "I can't post files here. Invite me with `/invite @Dreamboard` and retry.",
    SlackErrorKind.ARCHIVED: "This channel is archived, so I can't post the result here.",
    SlackErrorKind.RATE_LIMITED: "Slack kept rate-limiting Dreamboard, so the result could not be posted. "
    "Try again in a minute.",
    SlackErrorKind.UNAVAILABLE: "Slack did not answer while the result was being posted. "
    "Try again in a minute.",
    SlackErrorKind.NOT_FOUND: "Slack no longer has a message or file this job needed.",
}


class JobTimeoutError(Exception):
    """The job ran longer than OXEN_JOB_TIMEOUT."""

    def __init__(self, seconds: float) -> None:
        super().__init__(f"timed out after {seconds:g}s")
        self.seconds = seconds


def describe_failure(exc: BaseException, *, job_id: str) -> str:
    """What went wrong, for the user. Errors that carry their own user message keep it, unwrapped;
    anything unexpected names the job id the log holds the traceback under."""
    if isinstance(exc, BackendError):
        return exc.user_message
    if isinstance(exc, JobTimeoutError):
        return f"Oxen.ai did not finish within {exc.seconds / 60:g} minutes, so the job was stopped."
    if isinstance(exc, SlackError):
        return _SLACK.get(exc.kind, f"Slack refused to post the result ({exc.code}).")
    if isinstance(exc, UserFacingError):
        return str(exc)
    if isinstance(exc, StoreUnavailableError):
        return (
            f"Dreamboard could not save this job's progress for several minutes ({exc.reason}), so it "
            "stopped here. It picks the job up again when it is restarted with a writable database."
        )
    return (
        f"Dreamboard hit an internal error ({type(exc).__name__}) and stopped job `{job_id}`; "
        "the log has the details under that id."
    )
