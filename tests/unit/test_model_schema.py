"""Mapping flags onto each shape Oxen's Seedream 4.5 schema has had (oxen-api.md §4.2)."""

from __future__ import annotations

from typing import Any

import pytest

from bot.backends.model_schema import ModelSchema, SchemaError, plan_payload

PROMPT = {"type": "string"}
APRIL: dict[str, Any] = {
    "prompt": PROMPT,
    "input_image": {"type": "array", "items": {"type": "string"}},
    "aspect_ratio": {
        "type": "string",
        "enum": ["1:1", "16:9", "9:16", "4:3", "3:4", "3:2", "2:3", "match_input_image"],
        "default": "1:1",
    },
    "size": {"type": "string", "enum": ["2K", "4K"], "default": "4K"},
    "seed": {"type": "integer"},
}
MAY = {
    "prompt": PROMPT,
    "input_image": {"type": "string", "format": "uri"},
    "input_images": {"type": "array", "items": {"type": "string"}, "description": "Up to 14 images."},
    "size": {"type": "string", "enum": ["2K", "4K"]},
    "output_format": {"type": "string", "enum": ["jpeg"]},
    "watermark": {"type": "boolean", "default": False},
}
JULY = {"prompt": PROMPT, "input_images": {"type": "array", "items": {"type": "string"}}, "size": MAY["size"]}
CURRENT = {
    "prompt": PROMPT,
    "input_image": {"type": "array", "items": {"type": "string"}, "maxItems": 14},
    "size": {"type": "string", "enum": ["2K", "4K"], "default": "2K"},
    "watermark": {"type": "boolean", "default": False},
}


def schema(properties: dict[str, Any], key: str = "request_schema") -> ModelSchema:
    return ModelSchema.from_model_object(
        "bytedance-seedream-4-5", {key: {"type": "object", "properties": properties}}
    )


def test_april_shape_takes_aspect_ratio_and_seed() -> None:
    plan = plan_payload(schema(APRIL), prompt="fox", size="4K", aspect_ratio="16:9")
    assert plan.body_for(7) == {
        "model": "bytedance-seedream-4-5",
        "prompt": "fox",
        "aspect_ratio": "16:9",
        "size": "4K",
        "seed": 7,
    }
    assert plan.notes == ()
    assert plan.seed_honoured


def test_current_shape_folds_aspect_ratio_into_prompt_and_says_so() -> None:
    plan = plan_payload(schema(CURRENT), prompt="a fox.", size="2K", aspect_ratio="16:9")
    body = plan.body_for(7)
    assert body == {
        "model": "bytedance-seedream-4-5",
        "prompt": "a fox. Aspect ratio 16:9.",
        "size": "2K",
        "watermark": False,
    }
    assert not plan.seed_honoured
    assert any("aspect ratio 16:9" in note for note in plan.notes)
    assert any("does not take a seed" in note for note in plan.notes)


def test_square_needs_no_note_when_aspect_ratio_is_missing() -> None:
    plan = plan_payload(schema(CURRENT), prompt="fox", size="2K", aspect_ratio="1:1")
    assert plan.body_for(1)["prompt"] == "fox"
    assert all("aspect" not in note for note in plan.notes)


@pytest.mark.parametrize(
    ("properties", "field", "value", "limit"),
    [
        (APRIL, "input_image", ["u1", "u2"], 10),
        (MAY, "input_images", ["u1", "u2"], 10),
        (JULY, "input_images", ["u1", "u2"], 10),
        (CURRENT, "input_image", ["u1", "u2"], 10),
        ({"prompt": PROMPT, "input_image": {"type": "string"}}, "input_image", "u1", 1),
    ],
)
def test_references_go_where_each_shape_wants_them(
    properties: dict[str, Any], field: str, value: object, limit: int
) -> None:
    model = schema(properties)
    assert model.references_field == field
    assert model.max_references == limit
    plan = plan_payload(model, prompt="fox", size="2K", aspect_ratio=None, references=["u1", "u2"])
    assert plan.body_for(1)[field] == value


def test_references_beyond_the_cap_are_dropped_and_counted() -> None:
    plan = plan_payload(
        schema(CURRENT), prompt="x", size="2K", aspect_ratio=None, references=[str(i) for i in range(12)]
    )
    assert len(plan.body_for(1)["input_image"]) == 10
    assert plan.references_dropped == 2


def test_limits_follow_the_schema() -> None:
    properties = {
        **APRIL,
        "prompt": {"type": "string", "maxLength": 500},
        "seed": {"type": "integer", "maximum": 999},
    }
    limits = schema(properties).limits
    assert (limits.prompt_max, limits.seed_range, limits.sizes) == (500, (0, 999), ("2K", "4K"))


def test_catalogue_key_is_accepted() -> None:
    assert schema(CURRENT, key="json_request_schema").references_field == "input_image"


@pytest.mark.parametrize(
    "model", [{}, {"request_schema": None}, {"request_schema": {"properties": {"image": {}}}}]
)
def test_unusable_schemas_are_refused(model: dict[str, Any]) -> None:
    with pytest.raises(SchemaError):
        ModelSchema.from_model_object("m", model)
