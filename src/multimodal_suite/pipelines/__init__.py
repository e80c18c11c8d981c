"""Kedro pipelines, one package per system."""
