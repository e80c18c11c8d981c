"""``demo_data`` pipeline: generates the sample inputs the demo environment runs on.

``generate_comic_books`` writes a deterministic collection of small comic books (page images, OCR and panel
sidecars, deliberate bad inputs) and their CoSMo-format annotations; ``generate_tagging_samples`` the source shards
and target folders of the tagging pipelines. Each collection is one module (``comic_books``,
``tagging_collections``) built on the shared ``drawing`` primitives and ``broken_inputs`` makers; ``params`` holds
the parameter sections and ``nodes`` turns each section into its collection.
"""
from .pipeline import create_pipeline

__all__ = ["create_pipeline"]
