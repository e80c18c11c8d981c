"""RayRunner: same outputs as SequentialRunner, GPU requests, clusters it starts or joins, errors, hooks, cleanup."""
from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import pandas as pd
import psutil
import pytest
import ray
from kedro.framework.hooks import hook_impl
from kedro.framework.hooks.manager import _create_hook_manager
from kedro.io import AbstractDataset, DataCatalog, MemoryDataset
from kedro.pipeline import Node, Pipeline
from kedro.runner import SequentialRunner
from kedro_datasets.pandas import CSVDataset
from kedro_datasets.pickle import PickleDataset

from multimodal_suite.common.ray import RayOptions
from multimodal_suite.runners import RayRunner

RAY_PROCESS_NAMES = ("raylet", "gcs_server", "plasma_store")


# ---------------------------------------------------------------- node functions


def split_columns(raw: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    return raw[["a"]], raw[["b"]]


def scale(left: pd.DataFrame, factor: int) -> pd.DataFrame:
    return left * factor


def summarise(right: pd.DataFrame) -> dict[str, float]:
    return {"mean_b": float(right["b"].mean()), "rows": len(right)}


def combine(scaled: pd.DataFrame, summary: dict[str, float]) -> tuple[pd.DataFrame, float]:
    report = scaled.assign(mean_b=summary["mean_b"])
    return report, float(report["a"].sum())


def gpu_ids(summary: dict[str, float]) -> list:
    ids = ray.get_gpu_ids()
    assert ids, "a node tagged gpu ran without a GPU assigned"
    return ids


def explode(summary: dict[str, float]) -> dict:
    raise ValueError(f"cannot use a summary of {summary['rows']} rows")


def slow_copy(right: pd.DataFrame) -> pd.DataFrame:
    time.sleep(1.0)
    return right


def timed_sleep(x: Any) -> tuple[float, float]:
    start = time.time()
    time.sleep(1.0)
    return start, time.time()


def chunks(rows: int):
    for i in range(rows):
        yield pd.DataFrame({"i": [i], "square": [i * i]})


def count_rows(last_chunk: pd.DataFrame) -> int:
    return int(last_chunk["i"].iloc[0])


def unwrap_handle(handle: Handle) -> int:
    return handle.value * 2


def plot(summary: dict[str, float]):
    from matplotlib.figure import Figure

    figure = Figure(figsize=(2, 2))
    figure.subplots().bar(list(summary), list(summary.values()))
    return figure


def add_one(x: int) -> int:
    return x + 1


# ---------------------------------------------------------------- datasets and hooks


class Handle:
    """Loaded data that cannot be pickled, like an open index or client."""

    def __init__(self, value: int):
        self.value = value
        self.lock = threading.Lock()


class HandleDataset(AbstractDataset):
    def __init__(self, value: int):
        self._value = value

    def load(self) -> Handle:
        return Handle(self._value)

    def save(self, data: Any) -> None:
        raise NotImplementedError

    def _describe(self) -> dict[str, Any]:
        return {"value": self._value}


class ChunkListDataset(AbstractDataset):
    """Appends every save; holds a lock so the dataset itself cannot be pickled."""

    def __init__(self):
        self.saved: list[pd.DataFrame] = []
        self._lock = threading.Lock()

    def load(self) -> list[pd.DataFrame]:
        return list(self.saved)

    def save(self, data: pd.DataFrame) -> None:
        with self._lock:
            self.saved.append(data)

    def _describe(self) -> dict[str, Any]:
        return {"chunks": len(self.saved)}


class RecordingHook:
    def __init__(self):
        self.calls: list[tuple] = []

    @hook_impl
    def before_node_run(self, node, inputs):
        self.calls.append(("before_node_run", node.name, {k: type(v).__name__ for k, v in inputs.items()}))

    @hook_impl
    def after_node_run(self, node, outputs):
        self.calls.append(("after_node_run", node.name, {k: type(v).__name__ for k, v in outputs.items()}))

    @hook_impl
    def on_node_error(self, error, node):
        self.calls.append(("on_node_error", node.name, type(error).__name__))

    @hook_impl
    def before_dataset_loaded(self, dataset_name, node):
        self.calls.append(("before_dataset_loaded", node.name, dataset_name))

    @hook_impl
    def after_dataset_loaded(self, dataset_name, data, node):
        self.calls.append(("after_dataset_loaded", node.name, dataset_name, type(data).__name__))

    @hook_impl
    def before_dataset_saved(self, dataset_name, data, node):
        self.calls.append(("before_dataset_saved", node.name, dataset_name))

    @hook_impl
    def after_dataset_saved(self, dataset_name, data, node):
        self.calls.append(("after_dataset_saved", node.name, dataset_name, type(data).__name__))

    def names(self, hook: str) -> list:
        return [call[1:] for call in self.calls if call[0] == hook]


def hook_manager_with(hook: RecordingHook):
    manager = _create_hook_manager()
    manager.register(hook)
    return manager


# ---------------------------------------------------------------- pipelines and catalogs


def diamond() -> Pipeline:
    """raw.csv -> split -> (scale, summarise) -> combine -> report.csv + total (in memory)."""
    return Pipeline(
        [
            Node(split_columns, "raw", ["left", "right"], name="split_columns"),
            Node(scale, ["left", "params:factor"], "scaled", name="scale"),
            Node(summarise, "right", "summary", name="summarise"),
            Node(combine, ["scaled", "summary"], ["report", "total"], name="combine"),
        ]
    )


def diamond_catalog(folder: Path) -> DataCatalog:
    folder.mkdir(parents=True, exist_ok=True)
    raw = folder / "raw.csv"
    pd.DataFrame({"a": [1, 2, 3, 4], "b": [10.0, 20.0, 30.0, 45.0]}).to_csv(raw, index=False)
    return DataCatalog(
        datasets={
            "raw": CSVDataset(filepath=str(raw)),
            "params:factor": MemoryDataset(3),
            "summary": PickleDataset(filepath=str(folder / "summary.pkl")),
            "report": CSVDataset(filepath=str(folder / "report.csv"), save_args={"index": False}),
        }
    )


def diamond_results(catalog: DataCatalog, run_result: dict) -> dict[str, Any]:
    return {
        "report": catalog.load("report"),
        "summary": catalog.load("summary"),
        "total": run_result["total"].load(),
    }


def assert_same_results(expected: dict[str, Any], actual: dict[str, Any]) -> None:
    assert set(expected) == set(actual)
    for name, value in expected.items():
        if isinstance(value, pd.DataFrame):
            pd.testing.assert_frame_equal(actual[name], value)
        else:
            assert actual[name] == value, name


def ray_children() -> list[psutil.Process]:
    found = []
    for child in psutil.Process().children(recursive=True):
        try:
            if any(name in child.name() for name in RAY_PROCESS_NAMES):
                found.append(child)
        except psutil.NoSuchProcess:
            pass
    return found


def assert_ray_cleaned_up() -> None:
    assert not ray.is_initialized()
    deadline = time.monotonic() + 15
    while ray_children() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert ray_children() == []


@pytest.fixture
def no_ray_address(monkeypatch):
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    assert not ray.is_initialized()


# ---------------------------------------------------------------- on one shared local Ray with a logical GPU


@pytest.fixture(scope="class")
def shared_ray():
    ray.init(
        address="local",
        num_cpus=2,
        num_gpus=1,
        include_dashboard=False,
        object_store_memory=100 * 2**20,
        log_to_driver=False,
    )
    yield
    ray.shutdown()


@pytest.mark.usefixtures("shared_ray")
@pytest.mark.slow
class TestOnSharedRay:
    def test_diamond_matches_sequential_runner(self, tmp_path):
        expected_catalog = diamond_catalog(tmp_path / "sequential")
        expected = diamond_results(expected_catalog, SequentialRunner().run(diamond(), expected_catalog))
        catalog = diamond_catalog(tmp_path / "ray")

        result = RayRunner().run(diamond(), catalog)

        assert_same_results(expected, diamond_results(catalog, result))
        assert ray.is_initialized()  # a connection the runner did not open is left open

    def test_figures_from_a_worker_are_saved_on_the_driver(self, tmp_path):
        # ray.get maps a figure's numpy buffers read-only; savefig writes into them
        from kedro_datasets.matplotlib import MatplotlibDataset

        catalog = DataCatalog({"summary": MemoryDataset({"a": 1.0, "b": 2.0}),
                               "figure": MatplotlibDataset(filepath=str(tmp_path / "figure.png"))})
        RayRunner().run(Pipeline([Node(plot, "summary", "figure", name="plot")]), catalog)
        assert (tmp_path / "figure.png").stat().st_size > 1000

    def test_async_loading_and_saving_gives_the_same_outputs(self, tmp_path):
        expected_catalog = diamond_catalog(tmp_path / "sequential")
        expected = diamond_results(expected_catalog, SequentialRunner().run(diamond(), expected_catalog))
        catalog = diamond_catalog(tmp_path / "ray")

        result = RayRunner(is_async=True).run(diamond(), catalog)

        assert_same_results(expected, diamond_results(catalog, result))

    def test_independent_nodes_run_concurrently(self):
        pipeline = Pipeline(
            [Node(timed_sleep, "x", "first", name="first"), Node(timed_sleep, "x", "second", name="second")]
        )
        catalog = DataCatalog(datasets={"x": MemoryDataset(1)})

        result = RayRunner().run(pipeline, catalog)

        (start_1, end_1), (start_2, end_2) = result["first"].load(), result["second"].load()
        assert max(start_1, start_2) < min(end_1, end_2)

    def test_hooks_fire_on_the_driver(self, tmp_path):
        hook = RecordingHook()

        RayRunner().run(diamond(), diamond_catalog(tmp_path), hook_manager_with(hook))

        node_names = {"split_columns", "scale", "summarise", "combine"}
        assert {name for name, _ in hook.names("before_node_run")} == node_names
        assert {name for name, _ in hook.names("after_node_run")} == node_names
        loaded = {(node, name): kind for node, name, kind in hook.names("after_dataset_loaded")}
        assert loaded[("split_columns", "raw")] == "DataFrame"
        assert loaded[("scale", "params:factor")] == "int"
        assert loaded[("scale", "left")] == "ObjectRef"  # in-memory intermediate, never fetched
        saved = {(node, name): kind for node, name, kind in hook.names("after_dataset_saved")}
        assert saved[("summarise", "summary")] == "dict"
        assert saved[("combine", "report")] == "DataFrame"
        assert saved[("combine", "total")] == "float"  # nothing consumes it: fetched for the caller
        assert saved[("split_columns", "left")] == "ObjectRef"
        assert hook.names("on_node_error") == []

    def test_materialized_memory_datasets_reach_hooks_as_values(self, tmp_path):
        hook = RecordingHook()

        RayRunner(materialize_memory_datasets=True).run(diamond(), diamond_catalog(tmp_path), hook_manager_with(hook))

        saved = {(node, name): kind for node, name, kind in hook.names("after_dataset_saved")}
        assert saved[("split_columns", "left")] == "DataFrame"
        after = dict(hook.names("after_node_run"))
        assert after["scale"] == {"scaled": "DataFrame"}

    def test_gpu_node_gets_a_gpu(self, tmp_path):
        pipeline = diamond() + Pipeline([Node(gpu_ids, "summary", "gpu_ids", name="on_gpu", tags=["gpu"])])

        result = RayRunner(num_gpus=0.5).run(pipeline, diamond_catalog(tmp_path))

        assert len(result["gpu_ids"].load()) == 1

    def test_failing_node_raises_its_own_error_naming_the_node(self, tmp_path):
        hook = RecordingHook()
        pipeline = diamond() + Pipeline(
            [
                Node(explode, "summary", "never", name="explode_summary"),
                Node(slow_copy, "right", "right_copy", name="slow_copy"),
            ]
        )
        catalog = diamond_catalog(tmp_path)
        catalog["right_copy"] = PickleDataset(filepath=str(tmp_path / "right_copy.pkl"))

        with pytest.raises(ValueError, match="cannot use a summary of 4 rows") as raised:
            RayRunner().run(pipeline, catalog, hook_manager_with(hook))

        assert any("explode_summary" in note for note in raised.value.__notes__)
        assert hook.names("on_node_error") == [("explode_summary", "ValueError")]
        # a node already running when the other failed finished and saved its output
        assert (tmp_path / "right_copy.pkl").exists()

    def test_generator_chunks_are_saved_on_the_driver(self):
        def make_catalog() -> DataCatalog:
            return DataCatalog(
                datasets={"rows": MemoryDataset(3), "table_chunks": ChunkListDataset()}
            )

        pipeline = Pipeline(
            [
                Node(chunks, "rows", "table_chunks", name="write_chunks"),
                Node(chunks, "rows", "last_chunk", name="chunks_in_memory"),
                Node(count_rows, "last_chunk", "last_index", name="count_rows"),
            ]
        )
        expected_catalog = make_catalog()
        expected = SequentialRunner().run(pipeline, expected_catalog)
        catalog = make_catalog()

        result = RayRunner().run(pipeline, catalog)

        got, want = catalog.load("table_chunks"), expected_catalog.load("table_chunks")
        assert len(got) == len(want) == 3
        for got_chunk, want_chunk in zip(got, want):
            pd.testing.assert_frame_equal(got_chunk, want_chunk)
        assert result["last_index"].load() == expected["last_index"].load() == 2

    def test_node_with_unpicklable_input_runs_on_the_driver(self):
        pipeline = Pipeline(
            [
                Node(unwrap_handle, "handle", "value", name="unwrap_handle"),
                Node(add_one, "value", "value_plus_one", name="add_one"),
            ]
        )

        result = RayRunner().run(pipeline, DataCatalog(datasets={"handle": HandleDataset(20)}))

        assert result["value_plus_one"].load() == 41


# ---------------------------------------------------------------- Ray started by the runner itself


@pytest.mark.slow
def test_gpu_node_is_refused_on_a_cluster_without_gpus(tmp_path, no_ray_address):
    pipeline = diamond() + Pipeline([Node(gpu_ids, "summary", "gpu_ids", name="on_gpu", tags=["gpu"])])

    with pytest.raises(RuntimeError, match=r"node 'on_gpu' asks for num_gpus=1 but the Ray cluster has 0 GPUs"):
        RayRunner(init_kwargs={"num_gpus": 0}).run(pipeline, diamond_catalog(tmp_path))

    assert not (tmp_path / "summary.pkl").exists()  # refused before any node ran
    assert_ray_cleaned_up()


@pytest.mark.slow
def test_failure_on_own_ray_leaves_no_ray_processes(tmp_path, no_ray_address):
    pipeline = diamond() + Pipeline([Node(explode, "summary", "never", name="explode_summary")])

    with pytest.raises(ValueError, match="cannot use a summary"):
        RayRunner().run(pipeline, diamond_catalog(tmp_path))

    assert_ray_cleaned_up()


# ---------------------------------------------------------------- an existing cluster started with `ray start`


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _processes_using(marker: str) -> list[psutil.Process]:
    found = []
    for process in psutil.process_iter(["cmdline"]):
        try:
            if process.pid != os.getpid() and any(marker in part for part in process.info["cmdline"] or []):
                found.append(process)
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            pass
    return found


@pytest.fixture
def ray_head():
    """A head node started with `ray start`; its own temp dir lets teardown stop exactly its processes.

    `ray stop` would also stop every other Ray instance of this user on the machine.
    """
    temp_dir = tempfile.mkdtemp(prefix="rayhead")  # short: Ray's socket paths must stay under 107 bytes
    port = _free_port()
    ray_cli = shutil.which("ray") or str(Path(os.sys.executable).with_name("ray"))
    subprocess.run(
        [
            ray_cli, "start", "--head", "--node-ip-address", "127.0.0.1", "--port", str(port), "--num-cpus", "1",
            "--include-dashboard=false", "--disable-usage-stats", "--temp-dir", temp_dir,
        ],
        check=True,
        capture_output=True,
        timeout=120,
    )
    try:
        yield f"127.0.0.1:{port}"
    finally:
        processes = _processes_using(temp_dir)
        for process in list(processes):  # agents rename themselves (ray::DashboardAgent): found as children
            try:
                processes.extend(process.children(recursive=True))
            except psutil.NoSuchProcess:
                pass
        for process in processes:
            try:
                process.terminate()
            except psutil.NoSuchProcess:
                pass
        # gcs_server and raylet take long to act on SIGTERM; this cluster holds nothing worth a clean exit.
        deadline = time.monotonic() + 2
        while (alive := [p for p in processes if _is_alive(p)]) and time.monotonic() < deadline:
            time.sleep(0.2)
        for process in alive:
            try:
                process.kill()
            except psutil.NoSuchProcess:
                pass
        shutil.rmtree(temp_dir, ignore_errors=True)


def _is_alive(process: psutil.Process) -> bool:
    try:
        return process.status() != psutil.STATUS_ZOMBIE  # exited; reaping is its parent's business
    except psutil.NoSuchProcess:
        return False


@pytest.mark.slow
def test_runs_on_an_existing_cluster_and_leaves_it_running(tmp_path, ray_head, monkeypatch):
    expected_catalog = diamond_catalog(tmp_path / "sequential")
    expected = diamond_results(expected_catalog, SequentialRunner().run(diamond(), expected_catalog))

    by_argument = diamond_catalog(tmp_path / "argument")
    result = RayRunner(address=ray_head).run(diamond(), by_argument)
    assert_same_results(expected, diamond_results(by_argument, result))
    assert_ray_cleaned_up()

    monkeypatch.setenv("RAY_ADDRESS", ray_head)
    by_environment = diamond_catalog(tmp_path / "environment")
    result = RayRunner().run(diamond(), by_environment)
    assert_same_results(expected, diamond_results(by_environment, result))
    assert_ray_cleaned_up()

    ray.init(address=ray_head, log_to_driver=False)
    try:
        assert ray.cluster_resources()["CPU"] == 1
    finally:
        ray.shutdown()


# ---------------------------------------------------------------- construction as `kedro run` does it


def test_cli_runner_params_construct_the_runner():
    from kedro.framework.cli.project import _resolve_runner_kwargs
    from kedro.framework.cli.utils import _split_params
    from kedro.utils import load_obj

    params = _split_params(None, None, "num_gpus=0.5,num_cpus=2,address=127.0.0.1:6379,log_to_driver=false")
    runner_class = load_obj("multimodal_suite.runners.RayRunner", "kedro.runner")

    runner = runner_class(**_resolve_runner_kwargs(False, params))

    assert isinstance(runner, RayRunner)
    assert runner.options == RayOptions(num_cpus_per_replica=2, num_gpus_per_replica=0.5, address="127.0.0.1:6379")
    assert runner._log_to_driver is False and runner._is_async is False


def test_num_gpus_0_runs_gpu_nodes_with_cpus_only():
    from kedro.framework.cli.utils import _split_params

    gpu_node = Node(gpu_ids, "summary", "gpu_ids", name="on_gpu", tags=["gpu"])
    on_cpus = RayRunner(**_split_params(None, None, "num_gpus=0"))
    shared = RayRunner(**_split_params(None, None, "num_gpus=0.5,num_cpus=2"))

    assert on_cpus._resources(gpu_node) == {"num_cpus": 1}
    assert shared._resources(gpu_node) == {"num_cpus": 2, "num_gpus": 0.5}
    assert shared._resources(Node(add_one, "x", "y", name="cpu_only")) == {"num_cpus": 2}


def test_negative_requests_are_refused():
    with pytest.raises(ValueError, match="must not be negative"):
        RayRunner(num_gpus=-1)
