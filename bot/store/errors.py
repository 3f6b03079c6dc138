"""The store's errors, the same for both database engines."""

from __future__ import annotations


class DuplicateRequestError(Exception):
    """A job for this Slack request already exists (Slack delivered the request twice)."""


class StoreUnavailableError(Exception):
    """A write could not be saved within its patience: the database stayed locked, full, failing or
    out of reach."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class StoreOpenError(Exception):
    """The database cannot be used at start-up; `str()` is the one message for the operator."""
