"""PollSchedule: when to poll each generation, from the model's recent durations (pure, clock injected).

Oxen advises polling images every 2–5 s (oxen-api.md §2.5, §3.3); at that cadence a finished image
waits 1.5 s on average to be noticed. With the completion stream up (§3.5) events make that moot; the
stream has no replay and may be down, so the schedule aims polls at the moment the model usually
finishes instead, learned per model from what this process saw:

- an observation is a bracket `(lo, hi]` of seconds from submission to the end: the last poll that
  found the generation running and the first that found it finished, or the arrival of its completion
  event (exact, lo == hi). A running poll long before the aim says nothing new and keeps no `lo`; a
  poll that misses the aim is recorded at once, so generations aiming next learn from it;
- over a bounded window of recent brackets, A = the latest known-running time and B = the earliest
  known-finished time (ignoring up to an eighth of them as outliers where that makes A < B). A < B:
  the durations agree, and the aim bisects (A, B], converging on the end within `tolerance` in a few
  jobs. A ≥ B: they spread; within one `fastest` interval the aim is A (all but outliers are done by
  then), wider, polls start at B and repeat every `fastest` s until A. No A in the window (every
  recent aim found its generation finished): the aim probes `tolerance` before B, in case the model
  got faster; this costs about one late notice (≤ `fastest`) per window;
- cold (nothing seen for the model) and for a generation whose submission time is unknown (found
  after a restart), polls come every `slowest` s (OXEN_POLL_INTERVAL); a slow poll closer than
  `fastest` before the aim is skipped;
- with the stream up, polls are only the safety net: every `slowest` s, the first one `slowest` s
  after the expected end, so a completion event rarely lands right after a poll.

Whatever the plan, two polls of one generation are never closer than `fastest` (1 s, or `slowest` if
that is set lower, as the tests do): the spacing is counted from the previous answer's arrival, so
Oxen sees them at least that far apart too.
"""

from __future__ import annotations

import math
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass

Clock = Callable[[], float]

FASTEST = 1.0
"""The shortest interval between two polls of one generation (seconds)."""
WINDOW = 16
"""How many recent durations are kept per model."""
MODELS = 32
"""How many models' durations are kept (least recently used ones are dropped)."""
TRACKED = 10_000
"""How many generations' poll state is kept (oldest dropped; one that returns starts cold)."""


@dataclass(frozen=True)
class Plan:
    """Seconds after submission: the first aimed poll, and the end of the dense polls after it."""

    aim: float
    dense_until: float


class Durations:
    """Recent submission-to-end brackets of one model, and the poll plan they suggest."""

    def __init__(self, *, window: int = WINDOW, tolerance: float = 0.01, fastest: float = FASTEST) -> None:
        self._brackets: deque[tuple[float | None, float]] = deque(maxlen=window)
        self._tolerance = tolerance
        self._fastest = fastest

    def add(self, lo: float | None, hi: float = math.inf) -> None:
        """Record that a generation was running `lo` s after submission (None: only long before its
        end, which says nothing new) and finished by `hi` s (infinite: still running, recorded at once
        so that the generations aiming next learn from it)."""
        self._brackets.append((None if lo is None else min(max(lo, 0.0), hi), max(hi, 0.0)))

    def plan(self) -> Plan | None:
        """Where to aim the next generation's polls; None before anything was seen."""
        if not self._brackets:
            return None
        lows = sorted(lo for lo, _ in self._brackets if lo is not None)
        highs = sorted(hi for _, hi in self._brackets)
        if not lows:
            # Every recent generation was found finished at its aim: probe a little earlier.
            return Plan(max(highs[0] - self._tolerance, 0.0), highs[0] + self._fastest)
        outliers = 0
        for outliers in range(min(len(lows), len(highs)) // 8 + 1):
            running, finished = lows[-1 - outliers], highs[outliers]
            if math.isinf(finished):
                return Plan(running + self._fastest, running + 2 * self._fastest)
            if running < finished:
                spread = finished - running
                aim = finished if spread <= self._tolerance else running + spread / 2
                return Plan(aim, finished + self._fastest)
        if running - finished <= self._fastest:
            return Plan(running, running + self._fastest)
        return Plan(finished, running + self._fastest)


@dataclass
class _Track:
    model: str | None
    submitted_at: float | None
    last_sent: float | None = None
    """When the last poll was sent."""
    last_answered: float | None = None
    """When its answer arrived (the next poll comes at least `fastest` s later)."""
    running_since: float | None = None
    """When the last poll that found it running was sent (or the submission)."""
    woken_at: float | None = None
    missed: bool = False
    """Whether a poll found it still running at its aim (told to the model's durations at once)."""


class PollSchedule:
    """Per-generation poll times, learned per model; every time is on the injected clock."""

    def __init__(
        self,
        *,
        slowest: float,
        fastest: float = FASTEST,
        clock: Clock,
        window: int = WINDOW,
        tolerance: float = 0.01,
    ) -> None:
        self.slowest = slowest
        self.fastest = min(fastest, slowest)
        self._clock = clock
        self._window = window
        self._tolerance = tolerance
        self._models: OrderedDict[str, Durations] = OrderedDict()
        self._tracks: OrderedDict[str, _Track] = OrderedDict()

    def submitted(self, generation_id: str, model: str, at: float) -> None:
        """A generation this process submitted at clock time `at` (its durations are learned)."""
        self._remember(generation_id, _Track(model, at, running_since=at))

    def due(self, generation_id: str, *, stream_up: bool) -> float:
        """The clock time of the generation's next poll (now or earlier: poll at once)."""
        track = self._track(generation_id)
        floor = -math.inf if track.last_answered is None else track.last_answered + self.fastest
        if track.woken_at is not None:
            return max(track.woken_at, floor)
        if track.last_sent is None and track.submitted_at is None:
            return self._clock()
        base = track.last_sent if track.last_sent is not None else track.submitted_at
        assert base is not None
        slow = base + self.slowest
        plan = self._plan(track)
        if plan is None or track.submitted_at is None:
            return max(slow, floor)
        aim = track.submitted_at + plan.aim
        if stream_up:
            return max(slow, aim + self.slowest, floor)
        if track.last_sent is None or track.last_sent < aim:
            # A slow poll that would hold the aimed one back (closer than `fastest` to it) is skipped.
            return max(slow if slow <= aim - self.fastest else aim, floor)
        if track.last_sent < track.submitted_at + plan.dense_until:
            return max(track.last_sent + self.fastest, floor)
        return max(slow, floor)

    def polling(self, generation_id: str) -> float:
        """Note that a poll is being sent now; returns the clock time to hand to `answered`."""
        now = self._clock()
        self._track(generation_id).last_sent = now
        return now

    def answered(self, generation_id: str, *, sent_at: float, finished: bool) -> None:
        """Record a poll's answer; a finished generation's duration is learned, then it is forgotten."""
        track = self._track(generation_id)
        track.last_answered = self._clock()
        if not finished:
            track.running_since = sent_at
            track.woken_at = None
            plan = self._plan(track)
            if plan is not None and track.submitted_at is not None and not track.missed:
                elapsed = sent_at - track.submitted_at
                if elapsed >= plan.aim - self._tolerance and track.model is not None:
                    track.missed = True
                    self._durations(track.model).add(elapsed)  # a missed aim: tell the others now
            return
        self._tracks.pop(generation_id, None)
        if track.model is None or track.submitted_at is None:
            return
        durations = self._durations(track.model)
        if track.woken_at is not None:
            elapsed = track.woken_at - track.submitted_at
            durations.add(elapsed, elapsed)
            return
        since = track.running_since if track.running_since is not None else track.submitted_at
        running, plan = since - track.submitted_at, durations.plan()
        informative = plan is None or running >= plan.aim - self._tolerance
        durations.add(running if informative else None, track.last_answered - track.submitted_at)

    def unanswered(self, generation_id: str) -> None:
        """A poll that got no answer (an error, or the wait was cancelled): it still counts for spacing."""
        self._track(generation_id).last_answered = self._clock()

    def woken(self, generation_id: str, at: float) -> None:
        """A completion event for the generation arrived at clock time `at`: poll as soon as allowed."""
        self._track(generation_id).woken_at = at

    def forget(self, generation_id: str) -> None:
        """Drop a generation's state (cancelled, or no longer waited for)."""
        self._tracks.pop(generation_id, None)

    def plan(self, model: str) -> Plan | None:
        """The current plan for `model` (for metrics and tests)."""
        durations = self._models.get(model)
        return durations.plan() if durations else None

    def _plan(self, track: _Track) -> Plan | None:
        return self.plan(track.model) if track.model is not None else None

    def _track(self, generation_id: str) -> _Track:
        track = self._tracks.get(generation_id)
        if track is None:
            track = _Track(None, None)
            self._remember(generation_id, track)
        return track

    def _remember(self, generation_id: str, track: _Track) -> None:
        self._tracks[generation_id] = track
        while len(self._tracks) > TRACKED:
            self._tracks.popitem(last=False)

    def _durations(self, model: str) -> Durations:
        durations = self._models.pop(model, None) or Durations(
            window=self._window, tolerance=self._tolerance, fastest=self.fastest
        )
        self._models[model] = durations
        while len(self._models) > MODELS:
            self._models.popitem(last=False)
        return durations
