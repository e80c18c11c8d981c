"""``demo_data`` pipeline: generates the sample inputs the demo environment runs on.

``generate_comic_books`` writes a deterministic collection of small comic books (page images, OCR and panel
sidecars, deliberate bad inputs) and their CoSMo-format annotations.
"""
from .pipeline import create_pipeline

__all__ = ["create_pipeline"]
