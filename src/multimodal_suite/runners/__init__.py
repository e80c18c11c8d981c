"""Kedro runners for this project: ``kedro run --runner multimodal_suite.runners.RayRunner``."""
from .ray_runner import RayRunner

__all__ = ["RayRunner"]
