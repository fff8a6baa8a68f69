"""The HTTP API's explicit schema (pydantic): what /docs shows and what clients can rely on."""

from __future__ import annotations

import dataclasses
from typing import Any

from pydantic import BaseModel, Field, create_model


class Health(BaseModel):
    status: str = Field(examples=["ok"])
    model: str
    package_version: str = Field(description="the boneage software's version")
    model_version: str | None = Field(None, description="the served model's version (its card)")
    api_key_required: bool = Field(False, description="whether /v1/* needs X-API-Key")
    heatmaps: bool = Field(False, description="whether heatmaps can be made")


class ModelInfo(BaseModel):
    name: str
    arch: str
    input_size: int | None
    validation_mae_months: float | None = None
    calibrated: bool
    interval_coverage: float | None = None


class ModelList(BaseModel):
    models: list[ModelInfo]


def _result_fields() -> dict[str, Any]:
    """The result's fields as pydantic fields: the one list in inference/api.py."""
    import typing

    from boneage.inference.api import BoneAgeResult

    hints = typing.get_type_hints(BoneAgeResult)
    out: dict[str, Any] = {}
    for f in dataclasses.fields(BoneAgeResult):
        desc = f.metadata.get("description")
        if f.default is not dataclasses.MISSING:
            out[f.name] = (hints[f.name], Field(f.default, description=desc))
        elif f.default_factory is not dataclasses.MISSING:
            out[f.name] = (hints[f.name], Field(default_factory=f.default_factory,
                                                description=desc))
        else:
            out[f.name] = (hints[f.name], Field(description=desc))
    return out


Prediction = create_model(
    "Prediction",
    __doc__="The same top-level keys as `boneage predict --format json`, then the model, the "
            "study date, the film and an optional heatmap.",
    **_result_fields(),
    model=(str, Field(description="the model's name")),
    study_date=(str | None, Field(None, description="from the DICOM header (YYYY-MM-DD)")),
    film=(str | None, Field(None, description="the film at its own shape, downscaled to at "
                            "most 1,024 px, as a JPEG data URL")),
    heatmap=(str | None, Field(None, description="Grad-CAM++ overlay on that film (same "
                               "size), as a JPEG data URL, when asked for and available")),
)


class Error(BaseModel):
    error: str
