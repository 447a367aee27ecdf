"""Pandera schemas, one per source record kind, and the helper that turns failures into reasons."""

from crm_pipeline.schemas.validate import validate_frame

__all__ = ["validate_frame"]
