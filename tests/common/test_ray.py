"""The Ray session: an existing connection is reused and left open, a cluster is joined and left, a local Ray is
sized, started and stopped; Ray options, object-store sizing and resource checks."""
from __future__ import annotations

import os

import pytest
import ray

from multimodal_suite.common import ray as ray_layer
from multimodal_suite.common.params import ParamsError, from_params
from multimodal_suite.common.ray import (
    GiB,
    RayOptions,
    check_replica_fits,
    default_object_store_bytes,
    local_init_kwargs,
    ray_session,
    shortfall,
)

# ---------------------------------------------------------------- options


def test_options_from_parameters_take_defaults_for_what_is_left_out():
    options = from_params(RayOptions, {"num_replicas": 4, "num_gpus_per_replica": 1}, "pss.precompute.ray")
    assert options == RayOptions(num_replicas=4, num_gpus_per_replica=1.0)
    assert (options.num_cpus_per_replica, options.address, options.object_store_gb) == (1, None, None)


def test_misspelled_option_names_the_key_and_the_closest_one():
    with pytest.raises(ParamsError, match=r"tagging\.source\.ray.*'num_replica'.*did you mean 'num_replicas'"):
        from_params(RayOptions, {"num_replica": 2}, "tagging.source.ray")


@pytest.mark.parametrize(("values", "message"), [
    ({"num_replicas": 0}, "num_replicas must be >= 1"),
    ({"num_gpus_per_replica": -1}, "num_gpus_per_replica must be >= 0"),
    ({"batch_size": 0}, "batch_size must be >= 1"),
    ({"object_store_gb": 0}, "object_store_gb must be > 0"),
])
def test_out_of_range_options_are_refused(values, message):
    with pytest.raises(ParamsError, match=message):
        from_params(RayOptions, values, "pss.precompute.ray")


def test_batch_size_of_the_options_wins_over_the_sections():
    assert RayOptions().batch_size_or(32) == 32
    assert RayOptions(batch_size=8).batch_size_or(32) == 8


# ---------------------------------------------------------------- sizing a local Ray


@pytest.mark.parametrize(("ram_bytes", "expected"), [(64 * GiB, 2 * GiB), (8 * GiB, 8 * GiB // 10)])
def test_object_store_is_a_tenth_of_ram_at_most_2_gib(monkeypatch, ram_bytes, expected):
    monkeypatch.setattr(ray_layer, "total_memory_bytes", lambda: ram_bytes)
    assert default_object_store_bytes() == expected


def test_object_store_is_2_gib_where_ram_is_unknown(monkeypatch):
    monkeypatch.setattr(ray_layer, "total_memory_bytes", lambda: None)
    assert default_object_store_bytes() == 2 * GiB


def test_local_ray_takes_every_cpu_and_detected_gpus_by_default():
    kwargs = local_init_kwargs(RayOptions())
    assert kwargs == {"num_cpus": os.cpu_count(), "object_store_memory": default_object_store_bytes(),
                      "include_dashboard": False}


def test_local_ray_is_sized_by_the_options_and_init_kwargs_win():
    options = RayOptions(num_cpus=3, num_gpus=0.5, object_store_gb=0.25)
    assert local_init_kwargs(options) == {"num_cpus": 3, "num_gpus": 0.5, "object_store_memory": GiB // 4,
                                          "include_dashboard": False}
    assert local_init_kwargs(options, num_gpus=0, log_to_driver=False)["num_gpus"] == 0


# ---------------------------------------------------------------- resource checks


def test_shortfall_names_the_first_resource_that_does_not_fit():
    assert shortfall({"GPU": 1, "CPU": 1}, {"CPU": 4.0}) == ("GPU", 1.0, 0.0)
    assert shortfall({"GPU": 0, "CPU": 8}, {"CPU": 4.0, "GPU": 1.0}) == ("CPU", 8.0, 4.0)
    assert shortfall({"GPU": 0.5, "CPU": 4}, {"CPU": 4.0, "GPU": 1.0}) is None


# ---------------------------------------------------------------- which session, decided without starting Ray


class FakeRay:
    """Records ``ray.init`` / ``ray.shutdown`` calls in place of the real ones."""

    def __init__(self, initialized: bool = False):
        self.initialized = initialized
        self.calls: list[tuple[str, dict]] = []

    def is_initialized(self) -> bool:
        return self.initialized

    def init(self, **kwargs) -> None:
        self.calls.append(("init", kwargs))
        self.initialized = True

    def shutdown(self) -> None:
        self.calls.append(("shutdown", {}))
        self.initialized = False


@pytest.fixture
def fake_ray(monkeypatch):
    fake = FakeRay()
    for name in ("is_initialized", "init", "shutdown"):
        monkeypatch.setattr(ray, name, getattr(fake, name))
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    return fake


def test_existing_connection_is_used_and_left_open(fake_ray):
    fake_ray.initialized = True
    with ray_session(RayOptions(address="head:6379")) as kind:
        assert kind == "existing"
    assert fake_ray.calls == [] and fake_ray.initialized


def test_address_of_the_options_is_joined_then_left(fake_ray, monkeypatch):
    monkeypatch.setenv("RAY_ADDRESS", "other:6379")
    with ray_session(RayOptions(address="head:6379"), log_to_driver=False) as kind:
        assert kind == "cluster"
        assert fake_ray.calls == [("init", {"address": "head:6379", "log_to_driver": False})]
    assert fake_ray.calls[-1] == ("shutdown", {})


def test_ray_address_is_joined_when_the_options_name_none(fake_ray, monkeypatch):
    monkeypatch.setenv("RAY_ADDRESS", "ray://head:10001")
    with ray_session() as kind:
        assert kind == "cluster"
    assert fake_ray.calls == [("init", {"address": "ray://head:10001"}), ("shutdown", {})]


def test_local_ray_is_started_sized_and_stopped_also_on_failure(fake_ray):
    options = RayOptions(num_cpus=2, object_store_gb=0.5)
    with pytest.raises(KeyError, match="inside"):
        with ray_session(options, num_gpus=0) as kind:
            assert kind == "local"
            raise KeyError("inside")
    assert fake_ray.calls == [
        ("init", {"address": "local", **local_init_kwargs(options, num_gpus=0)}),
        ("shutdown", {}),
    ]


# ---------------------------------------------------------------- a real local Ray


@pytest.mark.slow
def test_a_real_local_ray_has_the_size_asked_for_and_is_gone_afterwards(monkeypatch):
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    assert not ray.is_initialized()
    with ray_session(RayOptions(num_cpus=1, num_gpus=0, object_store_gb=0.1), log_to_driver=False) as kind:
        assert kind == "local"
        resources = ray.cluster_resources()
        assert resources["CPU"] == 1 and resources.get("GPU", 0) == 0
        assert resources["object_store_memory"] == pytest.approx(0.1 * GiB, rel=0.01)
        check_replica_fits(RayOptions(num_cpus_per_replica=1))
        with pytest.raises(RuntimeError, match=r"num_gpus_per_replica=1 but the local Ray has 0 GPUs"):
            check_replica_fits(RayOptions(num_gpus_per_replica=1))
        with pytest.raises(RuntimeError, match=r"num_cpus_per_replica=2 but the local Ray has 1 CPUs"):
            check_replica_fits(RayOptions(num_cpus_per_replica=2))
        with ray_session(RayOptions(num_cpus=2)) as inner:  # a node inside a step: the same Ray, left open
            assert inner == "existing"
        assert ray.is_initialized()
    assert not ray.is_initialized()
