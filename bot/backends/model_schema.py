"""The live request schema of an Oxen model, and how Dreamboard's flags map onto it.

Oxen regenerates its catalogue and Seedream 4.5's schema has changed shape several times
(see shared/docs/oxen-api.md, Decisions 1). Nothing here assumes a field exists: every flag
is mapped onto what the schema has today, and what it lacks degrades visibly through `notes`.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from bot.domain.requests import DEFAULT_PROMPT_MAX, DEFAULT_SEED_RANGE, SIZES, Limits

MAX_REFERENCES = 10
_UP_TO = re.compile(r"up to (\d+) images", re.IGNORECASE)


class SchemaError(ValueError):
    """The model object carries no usable request schema."""


@dataclass(frozen=True)
class ModelSchema:
    """The parts of a model's JSON Schema that Dreamboard maps flags onto."""

    model_id: str
    properties: Mapping[str, Mapping[str, Any]]

    @classmethod
    def from_model_object(cls, model_id: str, model: Mapping[str, Any]) -> ModelSchema:
        """Read `request_schema` (or `json_request_schema`, the catalogue's name) from a model object."""
        schema = model.get("request_schema") or model.get("json_request_schema")
        if not isinstance(schema, Mapping) or not isinstance(schema.get("properties"), Mapping):
            raise SchemaError(f"Oxen's description of {model_id} has no request schema")
        if "prompt" not in schema["properties"]:
            raise SchemaError(f"{model_id} takes no prompt, so it is not a text-to-image model")
        return cls(model_id=model_id, properties=schema["properties"])

    def _field(self, name: str) -> Mapping[str, Any] | None:
        return self.properties.get(name)

    @property
    def references_field(self) -> str | None:
        """The field references go into: an array `input_image`, else `input_images`, else a string one."""
        single = None
        for name in ("input_image", "input_images"):
            spec = self._field(name)
            if spec is None:
                continue
            if spec.get("type") == "array":
                return name
            single = single or name
        return single

    @property
    def max_references(self) -> int:
        """How many references the model takes, capped at Dreamboard's product limit of 10."""
        name = self.references_field
        if name is None:
            return 0
        spec = self.properties[name]
        if spec.get("type") != "array":
            return 1
        declared = spec.get("maxItems")
        if not isinstance(declared, int):
            found = _UP_TO.search(str(spec.get("description", "")))
            declared = int(found.group(1)) if found else MAX_REFERENCES
        return min(declared, MAX_REFERENCES)

    @property
    def aspect_ratios(self) -> tuple[str, ...]:
        """Values `aspect_ratio` accepts; empty when the schema has no such field."""
        spec = self._field("aspect_ratio")
        return tuple(spec.get("enum", ())) if spec else ()

    @property
    def takes_seed(self) -> bool:
        """Whether the schema has a `seed` field."""
        return self._field("seed") is not None

    @property
    def limits(self) -> Limits:
        """Prompt, seed and size bounds for validating a request before it is queued."""
        prompt = self.properties["prompt"]
        seed = self._field("seed") or {}
        size = self._field("size") or {}
        low, high = DEFAULT_SEED_RANGE
        return Limits(
            prompt_max=int(prompt.get("maxLength", DEFAULT_PROMPT_MAX)),
            seed_range=(max(int(seed.get("minimum", low)), low), min(int(seed.get("maximum", high)), high)),
            sizes=tuple(str(value).upper() for value in size.get("enum", SIZES)),
            max_references=self.max_references,
        )


@dataclass(frozen=True)
class PayloadPlan:
    """A model request body without its seed (each of `--n` images gets its own), and what the
    user must be told about flags the schema could not honour."""

    base: dict[str, Any]
    notes: tuple[str, ...]
    seed_honoured: bool
    references_dropped: int = 0
    references_sent: int = 0

    def body_for(self, seed: int) -> dict[str, Any]:
        """The request body for one image generated with `seed`."""
        return {**self.base, "seed": seed} if self.seed_honoured else dict(self.base)


def plan_payload(
    schema: ModelSchema,
    *,
    prompt: str,
    size: str,
    aspect_ratio: str | None,
    references: Sequence[str] = (),
) -> PayloadPlan:
    """Map Dreamboard's parameters onto the fields `schema` has (Decisions 1 of oxen-api.md)."""
    notes: list[str] = []
    body: dict[str, Any] = {"model": schema.model_id}
    if aspect_ratio is not None:
        if aspect_ratio in schema.aspect_ratios:
            body["aspect_ratio"] = aspect_ratio
        elif aspect_ratio == "match_input_image":
            notes.append("This model version has no aspect-ratio setting; it follows the references.")
        elif aspect_ratio != "1:1":
            prompt = f"{prompt.rstrip('. ')}. Aspect ratio {aspect_ratio}."
            notes.append(
                f"This model version has no aspect-ratio setting, so “aspect ratio {aspect_ratio}” "
                "was added to the prompt instead."
            )
    body["prompt"] = prompt
    size_spec = schema.properties.get("size")
    if size_spec is not None:
        body["size"] = size
    else:
        notes.append(f"This model version has no size setting; {size} was not sent.")
    if "watermark" in schema.properties:
        body["watermark"] = False
    dropped = sent = 0
    field_name = schema.references_field
    if references and field_name is None:
        dropped = len(references)
        notes.append("This model takes no reference images; the references were left out.")
    elif references and field_name is not None:
        kept = list(references[: schema.max_references])
        dropped, sent = len(references) - len(kept), len(kept)
        is_array = schema.properties[field_name].get("type") == "array"
        body[field_name] = kept if is_array else kept[0]
    seed_honoured = schema.takes_seed
    if not seed_honoured:
        notes.append(
            "This model version does not take a seed: the seed is recorded, and a replay reuses "
            "the prompt, references and settings rather than reproducing the image exactly."
        )
    if dropped and field_name is not None:
        notes.append(
            f"This model takes {schema.max_references} references; the last {dropped} were left out."
        )
    return PayloadPlan(body, tuple(notes), seed_honoured, dropped, sent)
