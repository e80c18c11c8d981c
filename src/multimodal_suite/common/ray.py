"""The one place that connects to, starts, sizes and stops Ray, and the one shape of Ray options.

Every Ray Data engine (``pss.precompute.ray``, ``tagging.source.ray``, …) and the ``RayRunner`` take the same
:class:`RayOptions`, so a parameter means the same thing in every system, and open Ray with :func:`ray_session`,
so a notebook's connection, a cluster and a local Ray are treated the same way everywhere.

Ray itself is imported only when a session opens: parsing options costs nothing for the in-process engines.
"""
from __future__ import annotations

import logging
import os
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Literal

logger = logging.getLogger(__name__)

GiB = 1024**3

SessionKind = Literal["existing", "cluster", "local"]


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

    Raises:
        ValueError: a count or size is out of range (naming the option).
    """

    num_replicas: int = 1
    num_cpus_per_replica: float = 1
    num_gpus_per_replica: float = 0
    batch_size: int | None = None
    address: str | None = None
    num_cpus: int | None = None
    num_gpus: float | None = None
    object_store_gb: float | None = None

    def __post_init__(self) -> None:
        at_least = {"num_replicas": 1, "num_cpus_per_replica": 0, "num_gpus_per_replica": 0, "batch_size": 1,
                    "num_cpus": 1, "num_gpus": 0}
        for name, lowest in at_least.items():
            value = getattr(self, name)
            if value is not None and value < lowest:
                raise ValueError(f"{name} must be >= {lowest}, got {value}")
        if self.object_store_gb is not None and self.object_store_gb <= 0:
            raise ValueError(f"object_store_gb must be > 0 (or null for the default), got {self.object_store_gb}")

    def batch_size_or(self, default: int) -> int:
        """``batch_size`` when set, else the section's own ``default``."""
        return int(default if self.batch_size is None else self.batch_size)


def total_memory_bytes() -> int | None:
    """Physical memory of this machine, or None where the OS does not say (not POSIX)."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, ValueError, OSError):
        return None


def default_object_store_bytes() -> int:
    """Object store size for a Ray started here: 10 % of RAM, at most 2 GiB (it spills to disk beyond that).

    Ray's own default (30 % of RAM) takes shared memory the decode threads and models need: ~7 GiB of a 24 GiB
    machine.
    """
    total = total_memory_bytes()
    return min(2 * GiB, total // 10) if total else 2 * GiB


def local_init_kwargs(options: RayOptions | None = None, **overrides: Any) -> dict[str, Any]:
    """``ray.init`` keywords for a local Ray sized by ``options``; ``overrides`` (any ``ray.init`` keyword) win.

    Every CPU unless ``num_cpus``; the GPUs Ray detects unless ``num_gpus``; an object store of
    ``object_store_gb`` or :func:`default_object_store_bytes`; no dashboard.
    """
    options = options or RayOptions()
    kwargs: dict[str, Any] = {
        "num_cpus": options.num_cpus or os.cpu_count() or 1,
        "object_store_memory": (int(options.object_store_gb * GiB) if options.object_store_gb
                                else default_object_store_bytes()),
        "include_dashboard": False,
    }
    if options.num_gpus is not None:
        kwargs["num_gpus"] = options.num_gpus
    return {**kwargs, **overrides}


@contextmanager
def ray_session(options: RayOptions | None = None, **init_kwargs: Any) -> Iterator[SessionKind]:
    """Make sure this process is connected to Ray for the duration of the block; yields how.

    - ``"existing"``: the process is connected already (a notebook, a test, a ``RayRunner`` worker); that
      connection is used and left open.
    - ``"cluster"``: ``options.address`` or ``RAY_ADDRESS`` names a cluster; this process connects, and
      disconnects when the block ends (the cluster keeps running).
    - ``"local"``: otherwise a fresh local Ray sized by :func:`local_init_kwargs` is started and shut down when
      the block ends, also when it fails.

    Args:
        options: where to connect and how to size a local Ray; ``None``: the defaults of :class:`RayOptions`.
        init_kwargs: extra ``ray.init`` keywords (``log_to_driver``, ``runtime_env``, …); for a local Ray they
            override the sizing (``num_cpus``, ``num_gpus``, ``object_store_memory``).
    """
    import ray

    if ray.is_initialized():
        logger.info("Using this process's existing Ray connection; it is left open")
        yield "existing"
        return
    options = options or RayOptions()
    address = options.address or os.environ.get("RAY_ADDRESS")
    try:
        if address:
            ray.init(address=address, **init_kwargs)
            logger.info("Connected to the Ray cluster at %s; it keeps running afterwards", address)
            kind: SessionKind = "cluster"
        else:
            kwargs = local_init_kwargs(options, **init_kwargs)
            # "local" starts a fresh instance even when `ray start` left a cluster running on this machine.
            ray.init(address="local", **kwargs)
            logger.info("Started a local Ray (num_cpus=%s, num_gpus=%s, object_store_memory_mb=%d); it is shut "
                        "down afterwards", kwargs["num_cpus"], kwargs.get("num_gpus", "auto"),
                        kwargs["object_store_memory"] // 2**20)
            kind = "local"
        yield kind
    finally:
        ray.shutdown()


def shortfall(request: Mapping[str, float], available: Mapping[str, float]) -> tuple[str, float, float] | None:
    """The first resource of ``request`` (``{"GPU": 1, "CPU": 2}``, in its order) that ``available`` has less of.

    Returns:
        ``(resource, wanted, have)``, or None when the request fits.
    """
    for resource, wanted in request.items():
        have = float(available.get(resource, 0))
        if wanted > have:
            return resource, float(wanted), have
    return None


def check_replica_fits(options: RayOptions) -> None:
    """Fail when one replica asks for more CPUs or GPUs than the connected Ray has in total.

    Call it on a local Ray only: it never grows, so Ray Data would wait forever, whereas a cluster may scale up.

    Raises:
        RuntimeError: naming the option, what the Ray has, and the fix.
    """
    import ray

    request = {"GPU": options.num_gpus_per_replica, "CPU": options.num_cpus_per_replica}
    missing = shortfall(request, ray.cluster_resources())
    if missing is None:
        return
    resource, wanted, have = missing
    if resource == "GPU":
        option, fix = ("num_gpus_per_replica", "set num_gpus_per_replica: 0 to run the replicas on CPUs, or "
                       "connect to a cluster with GPUs (address or RAY_ADDRESS)")
    else:
        option, fix = "num_cpus_per_replica", "lower num_cpus_per_replica, or give the local Ray more (num_cpus)"
    raise RuntimeError(f"a Ray Data replica asks for {option}={wanted:g} but the local Ray has {have:g} "
                       f"{resource}s; {fix}")
