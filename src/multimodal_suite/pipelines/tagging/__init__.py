"""Auto-tagging: segment images, embed the crops with CLIP, index a tagged source collection in FAISS, and tag
the images of target folders by kNN voting (pipelines ``tagging_source``, ``tagging_index``, ``tagging_target``,
``tagging_retag``; ``tagging`` = the first three)."""
from .pipeline import create_pipeline

__all__ = ["create_pipeline"]
