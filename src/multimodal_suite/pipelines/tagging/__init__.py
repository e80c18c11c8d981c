"""Auto-tagging: segment images, embed the crops with CLIP, index a tagged source collection in FAISS (with a
linear probe and per-tag thresholds calibrated on held-out source images), and tag the images of target folders by
calibrated kNN votes, the probe or both (``tagging.target.method``; pipelines ``tagging_source``, ``tagging_index``,
``tagging_target``, ``tagging_retag``; ``tagging`` = the first three)."""
from .pipeline import create_pipeline

__all__ = ["create_pipeline"]
