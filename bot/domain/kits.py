"""Channel brand kits (pure): a channel's default flags, style suffix and pinned references, reading
`/imagine kit set …`, applying a kit to one request, and what a job records of it.

A job keeps the user's prompt as written in `prompt`; what the kit added is recorded in its params under
`kit` (see KitApplication), so the prompt Oxen receives (`sent_prompt`) and the references it fetches
(`sent_references`) are derived from the job alone: a restart, a reroll or a replay sends the same.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from bot.domain.requests import FLAGS, Flag, GenerationRequest, Limits, RequestError, unescape_slack

MAX_PINS = 3
"""Pinned references a channel kit holds."""
STYLE_MAX = 500
"""The longest style suffix, in characters."""
KIT_FLAGS = ("ar", "size")
"""The request flags a kit may default (both default to "not given", so the kit fills only a gap)."""
CLEAR_WORD = "none"
"""`kit set --ar none` (or --size none, --style none) removes that part of the kit."""

_FLAG = re.compile(r"^(?:--|—|–)([A-Za-z][\w-]*)$")
_TOKEN = re.compile(r"\"([^\"]*)\"|“([^”]*)”|(\S+)")
_BY_NAME = {name: flag for flag in FLAGS for name in (flag.name, *flag.aliases) if flag.name in KIT_FLAGS}


@dataclass(frozen=True)
class Pin:
    """One pinned reference: the message it was pinned from and its stored reference description."""

    message_ts: str
    source: Mapping[str, Any]
    """A features.references.ReferenceSource as JSON."""
    ready_at: float
    """When Slack had the image (a thumbnail of it is safe some seconds later)."""

    @property
    def name(self) -> str:
        """How the reference is named to users."""
        return str(self.source.get("name") or "a pinned image")


@dataclass(frozen=True)
class Kit:
    """A channel's kit; the empty kit changes nothing."""

    aspect_ratio: str | None = None
    size: str | None = None
    style: str | None = None
    pins: tuple[Pin, ...] = ()
    updated_by: str | None = None

    @property
    def empty(self) -> bool:
        """Whether the kit sets nothing at all."""
        return not (self.aspect_ratio or self.size or self.style or self.pins)


@dataclass(frozen=True)
class KitChange:
    """What `kit set` changes: a part not named stays as it is; `None` in `cleared` removes it."""

    aspect_ratio: str | None = None
    size: str | None = None
    style: str | None = None
    cleared: frozenset[str] = field(default_factory=frozenset)

    def applied_to(self, kit: Kit) -> Kit:
        """`kit` with this change made (pins are untouched)."""
        values: dict[str, str | None] = {}
        for name in ("aspect_ratio", "size", "style"):
            if name in self.cleared:
                values[name] = None
            elif getattr(self, name) is not None:
                values[name] = getattr(self, name)
        return replace(kit, **values)  # type: ignore[arg-type]


def parse_kit_set(text: str, limits: Limits | None = None) -> KitChange:
    """Read the words after `kit set`: `--ar`, `--size` (checked as for a request) and `--style` (quoted,
    or the words up to the next flag); `none` removes a part. Raises RequestError."""
    limits = limits or Limits()
    tokens = [
        (m.group(1) if m.group(1) is not None else m.group(2), m.group(3))
        for m in _TOKEN.finditer(unescape_slack(text))
    ]
    values: dict[str, str] = {}
    index = 0
    while index < len(tokens):
        quoted, word = tokens[index]
        index += 1
        match = _FLAG.match(word) if word is not None else None
        if match is None:
            shown = quoted if quoted is not None else word
            raise RequestError(f'`{shown}` is not a kit flag: name it, like `--style "flat vector"`.')
        name = match.group(1).lower()
        key = "style" if name == "style" else _BY_NAME[name].name if name in _BY_NAME else None
        if key is None:
            raise RequestError(f"`--{name}` is not part of a kit. A kit sets `--ar`, `--size` and `--style`.")
        if key in values:
            raise RequestError(f"`--{name}` is given twice; keep one.")
        parts: list[str] = []
        while index < len(tokens):
            quoted, word = tokens[index]
            if quoted is None and word is not None and _FLAG.match(word):
                break
            parts.append(quoted if quoted is not None else str(word))
            index += 1
            if quoted is not None or key != "style":
                break
        if not parts:
            example = '"flat vector, brand palette"' if key == "style" else _flag(key).example
            raise RequestError(f"`--{name}` needs a value, for example `--{key} {example}`.")
        values[key] = " ".join(parts).strip()
    if not values:
        raise RequestError('Say what to set, like `/imagine kit set --ar 16:9 --style "flat vector"`.')
    change: dict[str, Any] = {}
    cleared: set[str] = set()
    for key, value in values.items():
        attribute = "aspect_ratio" if key == "ar" else key
        if value.lower() == CLEAR_WORD or (key == "style" and not value):
            cleared.add(attribute)
        elif key == "style":
            change["style"] = _style(value)
        else:
            parse = _flag(key).parse
            assert parse is not None  # kit flags take values
            change[attribute] = parse(value, limits)
    return KitChange(**change, cleared=frozenset(cleared))


def _flag(name: str) -> Flag:
    return next(flag for flag in FLAGS if flag.name == name)


def _style(value: str) -> str:
    style = " ".join(value.split())
    if len(style) > STYLE_MAX:
        raise RequestError(
            f"The style is {len(style):,} characters; a kit's style holds at most {STYLE_MAX}."
        )
    return style


def join_style(prompt: str, style: str) -> str:
    """The prompt with the style suffix appended (after a comma, unless the prompt ends a sentence)."""
    text = prompt.rstrip()
    return f"{text} {style}" if text.endswith((".", ",", ";", ":", "!", "?")) else f"{text}, {style}"


@dataclass(frozen=True)
class KitApplication:
    """What a channel kit gave one job (stored in its params under `kit`)."""

    style: str | None = None
    aspect_ratio: str | None = None
    """Set only when the kit supplied the job's aspect ratio."""
    size: str | None = None
    pins: tuple[Mapping[str, Any], ...] = ()
    """The pinned references sent after the job's own, in order."""
    left_out: tuple[str, ...] = ()
    """Pins that did not fit within the model's reference limit, by name."""
    style_left_out: bool = False
    """The style was not added: the prompt with it would be longer than the model accepts."""
    declined: bool = False
    """The request said `--nokit`."""

    def to_params(self) -> dict[str, Any]:
        """JSON for the job's params."""
        data: dict[str, Any] = {
            "style": self.style,
            "aspect_ratio": self.aspect_ratio,
            "size": self.size,
            "pins": [dict(pin) for pin in self.pins],
            "left_out": list(self.left_out),
            "style_left_out": self.style_left_out,
            "declined": self.declined,
        }
        return {key: value for key, value in data.items() if value}

    @classmethod
    def from_params(cls, params: Mapping[str, Any]) -> KitApplication | None:
        """The kit a job recorded, or None (made without a kit, or before kits existed)."""
        data = params.get("kit")
        if not isinstance(data, Mapping):
            return None
        return cls(
            style=data.get("style"),
            aspect_ratio=data.get("aspect_ratio"),
            size=data.get("size"),
            pins=tuple(data.get("pins") or ()),
            left_out=tuple(data.get("left_out") or ()),
            style_left_out=bool(data.get("style_left_out")),
            declined=bool(data.get("declined")),
        )

    @property
    def applied(self) -> bool:
        """Whether the kit changed anything about the job."""
        return bool(self.style or self.aspect_ratio or self.size or self.pins)

    def summary(self) -> str | None:
        """The card's line, e.g. "Channel kit: style, --ar 16:9, 2 pinned references" (None: no kit)."""
        parts = ["style"] if self.style else []
        parts += [f"--ar {self.aspect_ratio}"] if self.aspect_ratio else []
        parts += [f"--size {self.size}"] if self.size else []
        if self.pins:
            parts.append(f"{len(self.pins)} pinned reference{'s' if len(self.pins) != 1 else ''}")
        notes = []
        if self.style_left_out:
            notes.append("its style was left out: the prompt with it would be too long for the model")
        if self.left_out:
            notes.append(f"left out over the reference limit: {', '.join(self.left_out)}")
        if not parts and not notes:
            return None
        line = "Channel kit: " + (", ".join(parts) if parts else "nothing applied")
        return line + (f" ({'; '.join(notes)})" if notes else "")


def apply_kit(
    request: GenerationRequest, kit: Kit, *, own_references: int, limits: Limits
) -> tuple[GenerationRequest, KitApplication]:
    """`request` with the kit's defaults where it set nothing, and what the kit gives the job: the style
    (when the prompt with it fits the model), and the pins that fit after the job's own references."""
    if request.nokit:
        return request, KitApplication(declined=True)
    changes: dict[str, str] = {}
    if request.aspect_ratio is None and kit.aspect_ratio:
        changes["aspect_ratio"] = kit.aspect_ratio
    if request.size is None and kit.size and kit.size in limits.sizes:
        changes["size"] = kit.size
    style, style_left_out = kit.style, False
    if style and len(join_style(request.prompt, style)) > limits.prompt_max:
        style, style_left_out = None, True
    room = max(0, limits.max_references - own_references)
    pins = [dict(pin.source) for pin in kit.pins]
    application = KitApplication(
        style=style,
        aspect_ratio=changes.get("aspect_ratio"),
        size=changes.get("size"),
        pins=tuple(pins[:room]),
        left_out=tuple(str(pin.get("name", "a pinned image")) for pin in pins[room:]),
        style_left_out=style_left_out,
    )
    return request.model_copy(update=changes), application


def reapply(
    request: GenerationRequest, recorded: KitApplication, *, own_references: int, limits: Limits
) -> KitApplication:
    """The kit a job recorded, for a reroll, vary, 4K or replay of it: the same style and pins (refit
    after the new job's own references), and the flags it supplied where the new request still has them."""
    room = max(0, limits.max_references - own_references)
    pins = list(recorded.pins)
    return replace(
        recorded,
        aspect_ratio=recorded.aspect_ratio if request.aspect_ratio == recorded.aspect_ratio else None,
        size=recorded.size if request.size == recorded.size else None,
        pins=tuple(pins[:room]),
        left_out=tuple(str(pin.get("name", "a pinned image")) for pin in pins[room:]),
    )


def sent_prompt(prompt: str, params: Mapping[str, Any]) -> str:
    """The prompt Oxen receives for a job: its own, with the style suffix its kit recorded."""
    kit = KitApplication.from_params(params)
    return join_style(prompt, kit.style) if kit is not None and kit.style else prompt


def sent_references(params: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    """The references Oxen receives for a job: its own, then its kit's pins."""
    kit = KitApplication.from_params(params)
    own: Sequence[Mapping[str, Any]] = params.get("references") or []
    return [*own, *(kit.pins if kit is not None else ())]
