"""The sqlite MLflow store is created once, safely, however many runs start together on a fresh checkout."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import sqlalchemy
from kedro.framework.hooks.manager import _create_hook_manager, _register_hooks, _register_hooks_entry_points
from mlflow.store.db.utils import _verify_schema
from mlflow.tracking import MlflowClient

from multimodal_suite import settings
from multimodal_suite.hooks import ParameterValidationHook, TrackingStoreHook

# What each `kedro run` does at start: the project's hook, then kedro-mlflow's own experiment lookup, then a run.
FIRST_RUN = """
import sys
import mlflow
from mlflow.tracking import MlflowClient
from multimodal_suite.hooks import TrackingStoreHook
uri, name = sys.argv[1], sys.argv[2]
print("ready", flush=True)
sys.stdin.readline()
TrackingStoreHook.ensure_sqlite_store(uri, name)
client = MlflowClient(tracking_uri=uri)
if client.get_experiment_by_name(name) is None:
    client.create_experiment(name)
mlflow.set_tracking_uri(uri)
mlflow.set_experiment(name)
with mlflow.start_run():
    mlflow.log_param("writer", sys.argv[3])
print("done", flush=True)
"""


@pytest.mark.slow
def test_two_first_runs_at_once_both_succeed_and_leave_a_valid_store(tmp_path: Path) -> None:
    database = tmp_path / "fresh" / "mlflow.db"
    uri = f"sqlite:///{database}"
    runs = [
        subprocess.Popen(
            [sys.executable, "-c", FIRST_RUN, uri, "multimodal_suite", str(i)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )
        for i in range(2)
    ]
    for run in runs:
        line = run.stdout.readline().strip()
        if line != "ready":
            run.kill()
            pytest.fail(f"the run did not start: {run.communicate()[1][-3000:]}")
    for run in runs:
        run.stdin.write("go\n")
        run.stdin.flush()
    # the limit only keeps a hung run from hanging the suite; migrations take seconds even on a loaded machine
    for run in runs:
        stdout, stderr = run.communicate(timeout=1800)
        assert run.returncode == 0 and stdout.strip() == "done", stderr[-3000:]

    _verify_schema(sqlalchemy.create_engine(uri))  # raises on a half-migrated schema
    client = MlflowClient(tracking_uri=uri)
    experiments = [e for e in client.search_experiments() if e.name == "multimodal_suite"]
    assert len(experiments) == 1
    written = client.search_runs([experiments[0].experiment_id])
    assert sorted(run.data.params["writer"] for run in written) == ["0", "1"]
    assert not (database.parent / ".mlflow.db.lock").exists()


class FakeConfigLoader(dict):
    """The two things the hook asks of a config loader: ``config_patterns`` and ``loader["mlflow"]``."""

    def __init__(self, mlflow_conf: dict) -> None:
        super().__init__(mlflow=mlflow_conf)
        self.config_patterns: dict[str, list[str]] = {}


def test_the_hook_creates_the_configured_store_and_experiment(tmp_path: Path) -> None:
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    conf = {
        "server": {"mlflow_tracking_uri": uri},
        "tracking": {"experiment": {"name": None, "create_experiment_kwargs": {"artifact_location": "mlartifacts",
                                                                             "tags": {"team": "vision"}}}},
    }
    loader = FakeConfigLoader(conf)
    context = SimpleNamespace(config_loader=loader, project_path=tmp_path, _package_name="multimodal_suite")

    TrackingStoreHook().after_context_created(context)

    assert "mlflow" in loader.config_patterns
    experiment = MlflowClient(tracking_uri=uri).get_experiment_by_name("multimodal_suite")
    assert experiment is not None
    assert experiment.artifact_location == (tmp_path / "mlartifacts").as_uri()
    assert experiment.tags["team"] == "vision"


@pytest.mark.parametrize("uri", ["http://127.0.0.1:5000", "sqlite://", "sqlite:///:memory:", "databricks"])
def test_other_tracking_uris_are_left_to_kedro_mlflow(uri: str) -> None:
    assert TrackingStoreHook.ensure_sqlite_store(uri, "multimodal_suite") is False


def test_the_hook_runs_after_parameter_checks_and_before_kedro_mlflow() -> None:
    manager = _create_hook_manager()
    _register_hooks(manager, settings.HOOKS)
    _register_hooks_entry_points(manager, ())  # kedro-mlflow's hook, as `kedro run` registers it
    # pluggy calls the implementations in reverse order of this list
    calls = [impl.plugin for impl in reversed(manager.hook.after_context_created.get_hookimpls())]
    order = [type(plugin).__name__ for plugin in calls]
    assert order.index(ParameterValidationHook.__name__) < order.index(TrackingStoreHook.__name__)
    assert order.index(TrackingStoreHook.__name__) < order.index("MlflowHook")
