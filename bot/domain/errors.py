"""Errors whose text is already the complete message for the user (it names the file or input)."""

from __future__ import annotations


class UserFacingError(ValueError):
    """Raise with a sentence the user can act on; describe_failure shows it as it is."""


class CapReachedError(Exception):
    """The user already has the maximum number of jobs waiting."""

    def __init__(self, queued: int) -> None:
        super().__init__(f"{queued} jobs queued")
        self.queued = queued
