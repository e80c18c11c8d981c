"""The one place that connects to, starts, sizes and stops Ray, and the one shape of Ray options.

Every Ray Data engine (``pss.precompute.ray``, ``tagging.source.ray``, …) and the ``RayRunner`` take the same
:class:`RayOptions`, so a parameter means the same thing in every system.
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class RayOptions:
    """Where Ray work runs and how big its actor pool is (``<system>.<section>.ray`` parameters).

    Args:
        num_replicas: model replicas in a Ray Data actor pool.
        num_cpus_per_replica: CPUs each replica (or runner task) asks Ray for; also its torch thread count.
        num_gpus_per_replica: GPUs each replica (or ``gpu``-tagged runner task) asks Ray for; fractions share a
            GPU, 0 runs on CPUs.
        batch_size: rows per ``map_batches`` batch; ``None`` takes the section's own batch size.
        address: Ray cluster to connect to (``host:port``, ``ray://…``); ``None``: ``RAY_ADDRESS``, else a local Ray.
        num_cpus: CPUs of a local Ray started here; ``None``: every CPU.
        num_gpus: GPUs of a local Ray started here; ``None``: what Ray detects.
        object_store_gb: object store of a local Ray started here; ``None``: 10 % of RAM, at most 2 GiB.
    """

    num_replicas: int = 1
    num_cpus_per_replica: float = 1
    num_gpus_per_replica: float = 0
    batch_size: int | None = None
    address: str | None = None
    num_cpus: int | None = None
    num_gpus: float | None = None
    object_store_gb: float | None = None
