"""multimodal_suite."""
__version__ = "0.1.0"
