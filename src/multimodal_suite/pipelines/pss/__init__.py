"""Comic page-stream segmentation: cache page embeddings once, then label every page of every book with BookBERT.

``pss_precompute`` embeds page images (SigLIP) and OCR text (Qwen3 / MiniLM) into content-keyed shards,
``pss_train`` trains BookBERT and the single-page baseline and evaluates both, ``pss_classify`` labels every page.
"""
from .pipeline import create_pipeline

__all__ = ["create_pipeline"]
