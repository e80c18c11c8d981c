"""Shared building blocks with no Kedro imports: devices, batching, model specs, hashing, atomic writes."""
