"""The HTTP API's explicit schema (pydantic): what /docs shows and what clients can rely on."""

from __future__ import annotations

from pydantic import BaseModel, Field


class Health(BaseModel):
    status: str = Field(examples=["ok"])
    model: str
    version: str = Field(description="boneage version")
    api_key_required: bool = Field(False, description="whether /v1/* needs X-API-Key")
    heatmaps: bool = Field(False, description="whether heatmaps can be made (torch backend)")


class ModelInfo(BaseModel):
    name: str
    arch: str
    input_size: int | None
    validation_mae_months: float | None = None
    calibrated: bool
    interval_coverage: float | None = None


class ModelList(BaseModel):
    models: list[ModelInfo]


class Prediction(BaseModel):
    """The same top-level keys as `boneage predict --format json`, plus the model and an
    optional heatmap."""

    file: str
    sex: str = Field(description="M or F")
    bone_age_months: float
    bone_age_years: float
    interval_low_months: float | None = Field(None, description="90% prediction interval")
    interval_high_months: float | None = None
    chronological_age_months: float | None = None
    difference_months: float | None = Field(None, description="bone age - chronological age")
    sds: float | None = Field(None, description="SDS against Greulich & Pyle / Brush SDs")
    category: str | None = Field(None, description="delayed | normal | advanced")
    warnings: list[str] = []
    model: str
    study_date: str | None = Field(None, description="from the DICOM header (YYYY-MM-DD)")
    film: str | None = Field(None, description="the film at its own shape, downscaled to at "
                             "most 1,024 px, as a JPEG data URL")
    heatmap: str | None = Field(None, description="Grad-CAM++ overlay on that film (same "
                                "size), as a JPEG data URL, when asked for and available")


class Error(BaseModel):
    error: str
