"""``RayRunner``: runs a Kedro pipeline's nodes as Ray tasks, independent nodes side by side.

Usage::

    kedro run --runner multimodal_suite.runners.RayRunner --pipelines pss
    kedro run --runner multimodal_suite.runners.RayRunner \\
        --runner-params num_gpus=0.5,num_cpus=2,address=127.0.0.1:6379

What runs where:

- The driver (the ``kedro run`` process) owns the catalog. It loads every node input, saves every output and
  fires every hook (``before/after_node_run``, ``on_node_error``, ``before/after_dataset_loaded/saved``). Dataset
  objects never leave it, so datasets that cannot be pickled (kedro-mlflow's artifact datasets, anything holding
  a client or a lock) work unchanged.
- Only the node function runs remotely, as one Ray task per node. A node is submitted once every node it
  depends on has finished; the driver waits on all in-flight tasks with ``ray.wait``.
- Nodes tagged ``gpu`` ask Ray for ``num_gpus`` (fractions allowed), all others for ``num_cpus`` only. Before
  anything runs, requests larger than what the cluster has fail the run with an error naming the node.
- A node whose loaded inputs cannot be pickled (a FAISS index, an open handle) cannot travel to a worker: it runs
  in the driver process instead, with a warning naming the input.

How data moves:

- In-memory outputs (``MemoryDataset``, which includes every dataset not declared in the catalog) consumed by
  later nodes stay in the Ray object store and reach their consumers as object refs; the driver never fetches
  them. Hooks see the ``ray.ObjectRef`` in place of such data (``inputs``/``outputs`` of the node hooks and
  ``data`` of the dataset hooks); ``materialize_memory_datasets=True`` fetches them to the driver and saves them
  in their ``MemoryDataset`` first, so hooks see values exactly as under ``SequentialRunner``.
- Every other output (files, tracking datasets, in-memory outputs nobody in the pipeline consumes) is fetched
  to the driver and saved through the catalog; consumers load it from the catalog again, as under
  ``SequentialRunner``.
- An in-memory dataset is released (its object ref dropped, so Ray can free it) once its last consumer has run.

Generator nodes run remotely as Ray streaming tasks: every chunk the node yields travels to the driver and is
saved through the catalog as it arrives (appending datasets such as ``EmbeddingShardDataset`` receive one part per
chunk; an in-memory output keeps the last chunk, as under ``SequentialRunner``). ``after_node_run`` fires once the
stream ends, with the last chunk of each output.

A failing node fails the run with its own exception (type and message) and a note naming the node and holding the
remote traceback; nodes already running are allowed to finish and save their outputs first, as Kedro's other
parallel runners do. Nodes that start Ray work of their own (Ray Data ``map_batches`` with GPU actor pools) should
not carry the ``gpu`` tag: their actors ask for the GPUs, and a task holding one as well can leave them waiting.
"""
from __future__ import annotations

import inspect
import itertools as it
import re
from collections import Counter
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import ray
from kedro.framework.hooks.manager import _NullPluginManager
from kedro.io import MemoryDataset
from kedro.runner import AbstractRunner
from more_itertools import interleave
from ray import cloudpickle

from multimodal_suite.common.ray import RayOptions, ray_session, shortfall

if TYPE_CHECKING:
    from kedro.io import CatalogProtocol
    from kedro.pipeline import Pipeline
    from kedro.pipeline.node import Node
    from pluggy import PluginManager

_ANSI_ESCAPE = re.compile(r"\x1b\[[0-9;]*m")


def _execute_node(node: Node, input_names: tuple[str, ...], *input_values: Any) -> Any:
    """Runs ``node`` in a Ray worker.

    Returns:
        One Ray return value per node output, then ``None``: a tiny last value the driver waits on and fetches to
        learn whether the node succeeded without fetching any output. ``None`` alone for a node without outputs.
    """
    outputs = node.run(dict(zip(input_names, input_values)))
    if not node.outputs:
        return None
    return (*(outputs[name] for name in node.outputs), None)


def _stream_node(node: Node, input_names: tuple[str, ...], *input_values: Any) -> Iterator[tuple[str, Any]]:
    """Runs a generator ``node`` in a Ray worker, yielding ``(output name, chunk)`` pairs as they are produced."""
    outputs = node.run(dict(zip(input_names, input_values)))
    for name_and_chunk in _interleave_chunks(outputs):  # not `yield from`: Ray's send() must not reach zip
        yield name_and_chunk


def _interleave_chunks(outputs: dict[str, Iterable[Any]]) -> Iterator[tuple[str, Any]]:
    # The same order SequentialRunner saves chunks in: one chunk of each output in turn.
    return zip(it.cycle(outputs), interleave(*outputs.values()))


_execute_node_remote = ray.remote(_execute_node)
_stream_node_remote = ray.remote(num_returns="streaming")(_stream_node)

# The runner option asking for each resource, and how to get past a cluster that has too little of it.
_RESOURCE_FIXES = {
    "GPU": ("num_gpus", "connect to a cluster with GPUs (RAY_ADDRESS or --runner-params address=HOST:PORT), declare "
            "them when starting Ray (ray start --num-gpus N), or run the gpu nodes on CPUs with --runner-params "
            "num_gpus=0"),
    "CPU": ("num_cpus", "lower --runner-params num_cpus or use a larger cluster"),
}


@dataclass
class _Running:
    """A node whose function is running on Ray."""

    node: Node
    inputs: dict[str, Any]  # as handed to the hooks
    output_refs: list[ray.ObjectRef] = field(default_factory=list)
    status_ref: ray.ObjectRef | None = None
    stream: ray.ObjectRefGenerator | None = None
    last_chunks: dict[str, Any] = field(default_factory=dict)


class RayRunner(AbstractRunner):
    """Runs independent nodes concurrently as Ray tasks while the driver does all loading, saving and hooks.

    See the module docstring for what runs where and how data moves between nodes.

    The session (connect, or start and size a local Ray, and stop only that) is
    :func:`multimodal_suite.common.ray.ray_session`, the same as every Ray Data engine's; the keywords below are the
    ``--runner-params`` spellings of :class:`~multimodal_suite.common.ray.RayOptions` (:attr:`options`).

    Args:
        is_async: Load a node's inputs and save its outputs with threads.
        address: Address of an existing Ray cluster to connect to (``127.0.0.1:6379``, ``ray://head:10001``,
            ``auto``; ``options.address``); defaults to ``RAY_ADDRESS``. The cluster is left running after the run.
            Without either, the runner starts a local Ray sized to this machine (every CPU, the GPUs Ray detects, an
            object store of 10 % of RAM, at most 2 GiB) and shuts it down after the run. A process already
            connected to Ray (a notebook, a test) keeps its connection and the runner leaves it as it is.
        num_cpus: CPUs each node's task asks for (``options.num_cpus_per_replica``).
        num_gpus: GPUs each node tagged ``gpu`` asks for; fractions below 1 share a GPU, 0 runs them on CPUs
            (``options.num_gpus_per_replica``).
        materialize_memory_datasets: Fetch in-memory intermediate datasets to the driver so hooks see values
            instead of ``ray.ObjectRef``.
        log_to_driver: Print worker stdout/stderr (progress bars, prints) in the driver's console.
        init_kwargs: Extra keyword arguments for ``ray.init``, e.g. ``num_cpus`` / ``num_gpus`` /
            ``object_store_memory`` to size the local Ray differently, or ``runtime_env`` for a remote cluster whose
            nodes do not have this project installed (workers import the node functions from ``multimodal_suite``).

    Raises:
        ValueError: A resource request is negative.
    """

    GPU_TAG = "gpu"

    def __init__(  # noqa: PLR0913
        self,
        is_async: bool = False,
        address: str | None = None,
        num_cpus: float = 1,
        num_gpus: float = 1,
        materialize_memory_datasets: bool = False,
        log_to_driver: bool = True,
        init_kwargs: dict[str, Any] | None = None,
    ):
        super().__init__(is_async=is_async)
        if float(num_cpus) < 0 or float(num_gpus) < 0:
            raise ValueError(f"num_cpus and num_gpus must not be negative; got {num_cpus} and {num_gpus}")
        self._options = RayOptions(num_cpus_per_replica=float(num_cpus), num_gpus_per_replica=float(num_gpus),
                                   address=str(address) if address else None)
        self._materialize = bool(materialize_memory_datasets)
        self._log_to_driver = bool(log_to_driver)
        self._init_kwargs = dict(init_kwargs or {})

    @property
    def options(self) -> RayOptions:
        """Where the run goes and what each node's task asks for."""
        return self._options

    def _get_executor(self, max_workers: int) -> None:
        return None  # Ray schedules the tasks; there is no local executor.

    # ------------------------------------------------------------------ cluster

    def _resources(self, node: Node) -> dict[str, float]:
        cpus, gpus = self._options.num_cpus_per_replica, self._options.num_gpus_per_replica
        if self.GPU_TAG in node.tags and gpus > 0:
            return {"num_cpus": cpus, "num_gpus": gpus}
        return {"num_cpus": cpus}

    def _check_resources(self, pipeline: Pipeline) -> None:
        """Fails before anything runs when a node asks for more than the cluster has (Ray would wait forever)."""
        available = ray.cluster_resources()
        for node in pipeline.nodes:
            resources = self._resources(node)
            missing = shortfall({"GPU": resources.get("num_gpus", 0), "CPU": resources["num_cpus"]}, available)
            if missing is None:
                continue
            resource, wanted, have = missing
            option, fix = _RESOURCE_FIXES[resource]
            raise RuntimeError(
                f"node '{node.name}' asks for {option}={wanted:g} but the Ray cluster has {have:g} {resource}s; "
                f"{fix}."
            )

    # ------------------------------------------------------------------ run

    def _run(
        self,
        pipeline: Pipeline,
        catalog: CatalogProtocol,
        hook_manager: PluginManager | None = None,
        run_id: str | None = None,
    ) -> None:
        """Runs ``pipeline`` on Ray: connects, checks resources, schedules nodes as their inputs become ready.

        Args:
            pipeline: The ``Pipeline`` to run.
            catalog: The catalog the driver loads inputs from and saves outputs to.
            hook_manager: The ``PluginManager`` whose hooks fire on the driver.
            run_id: The id of the run.

        Raises:
            RuntimeError: A node asks for resources the cluster does not have.
            Exception: The first failing node's own exception, with a note naming the node.
        """
        if not pipeline.nodes:  # e.g. --only-missing-outputs with everything present: no need for Ray
            return
        with ray_session(self._options, **{"log_to_driver": self._log_to_driver, **self._init_kwargs}):
            self._check_resources(pipeline)
            _PipelineRun(self, pipeline, catalog, hook_manager or _NullPluginManager(), run_id).execute()


class _PipelineRun:
    """State of one ``RayRunner`` run: which nodes are done, running, and where in-memory data lives."""

    def __init__(  # noqa: PLR0913
        self,
        runner: RayRunner,
        pipeline: Pipeline,
        catalog: CatalogProtocol,
        hook_manager: PluginManager,
        run_id: str | None,
    ):
        self.runner = runner
        self.pipeline = pipeline
        self.catalog = catalog
        self.hooks = hook_manager.hook
        self.run_id = run_id
        self.logger = runner._logger
        self.is_async = runner._is_async
        self.load_counts = Counter(it.chain.from_iterable(n.inputs for n in pipeline.nodes))
        self.dependencies = pipeline.node_dependencies
        self.todo = list(pipeline.nodes)  # topological order
        self.done: set[Node] = set()
        self.running: dict[Any, _Running] = {}  # waitable (status ref or stream) -> node
        self.refs: dict[str, ray.ObjectRef] = {}  # in-memory datasets kept in the object store
        self.failure: BaseException | None = None
        free_outputs = pipeline.outputs()
        self.ref_passed = {
            name
            for node in pipeline.nodes
            if not inspect.isgeneratorfunction(node.func)
            for name in node.outputs
            if name not in free_outputs
            and "@" not in name  # transcoded names resolve through the catalog
            and isinstance(catalog.get(name), MemoryDataset)
        }

    def execute(self) -> None:
        try:
            while True:
                progressed = self._submit_ready() if self.failure is None else False
                if not self.running:
                    if self.failure is not None or not self.todo:
                        break
                    if not progressed:
                        raise RuntimeError(
                            "Unable to schedule new tasks although some nodes have not been run: "
                            + ", ".join(n.name for n in self.todo)
                        )
                    continue
                ready, _ = ray.wait(list(self.running), num_returns=1, fetch_local=False)
                for waitable in ready:
                    self._collect(waitable)
        finally:
            for waitable in self.running:  # only on an interrupt or an internal error
                try:
                    ray.cancel(waitable)
                except Exception:  # noqa: BLE001 - best effort; the task may be gone already
                    pass
        if self.failure is not None:
            self.runner._suggest_resume_scenario(self.pipeline, self.done, self.catalog)
            raise self.failure

    # ------------------------------------------------------------------ scheduling

    def _submit_ready(self) -> bool:
        ready = [n for n in self.todo if self.dependencies[n] <= self.done]
        for node in ready:
            self.todo.remove(node)
            try:
                self._start(node)
            except Exception as exc:  # noqa: BLE001 - recorded, raised once running nodes finish
                self._fail(node, exc)
                return True
        return bool(ready)

    def _start(self, node: Node) -> None:
        inputs = self._load_inputs(node)
        inputs.update(self._inputs_from_hooks(node, inputs))
        try:
            # Refs for what the driver holds; upstream in-memory outputs are refs already.
            args = [value if isinstance(value, ray.ObjectRef) else ray.put(value) for value in inputs.values()]
        except TypeError as exc:
            self.logger.warning(
                "Node '%s' runs in the driver process: one of its inputs %s cannot be pickled (%s)",
                node.name,
                sorted(inputs),
                str(exc).splitlines()[0],
            )
            self._run_on_driver(node, inputs)
            return
        names = tuple(inputs)
        task_options = {"name": node.name, **self.runner._resources(node)}
        self.logger.info("Submitting node '%s' to Ray (%s)", node.name, _format_options(task_options))
        if inspect.isgeneratorfunction(node.func):
            stream = _stream_node_remote.options(**task_options).remote(node, names, *args)
            self.running[stream] = _Running(node, inputs, stream=stream)
            return
        n_outputs = len(node.outputs)
        returned = _execute_node_remote.options(num_returns=n_outputs + 1 if n_outputs else 1, **task_options).remote(
            node, names, *args
        )
        *output_refs, status_ref = returned if n_outputs else [returned]
        self.running[status_ref] = _Running(node, inputs, output_refs=output_refs, status_ref=status_ref)

    def _collect(self, waitable: Any) -> None:
        running = self.running[waitable]
        node = running.node
        try:
            if running.stream is not None:
                if not self._save_next_chunk(running):
                    return  # more chunks to come
                del self.running[waitable]
                self._after_node_run(running, running.last_chunks)
            else:
                del self.running[waitable]
                try:
                    ray.get(running.status_ref)  # raises the node's error, if any
                except ray.exceptions.RayError as error:
                    _consume_errors(running.output_refs)
                    raise self._node_error(running, error) from None
                self._save_outputs(running)
        except Exception as exc:  # noqa: BLE001 - recorded, raised once running nodes finish
            self.running.pop(waitable, None)
            self._fail(node, exc)
            return
        self._finish(node)

    def _fail(self, node: Node, exc: BaseException) -> None:
        if self.failure is None:
            self.failure = exc
            if self.running:
                self.logger.error(
                    "Node '%s' failed; waiting for %d running node(s) to finish before stopping",
                    node.name,
                    len(self.running),
                )
        else:
            self.logger.error("Node '%s' also failed: %s: %s", node.name, type(exc).__name__, exc)

    def _finish(self, node: Node) -> None:
        for name in node.confirms:
            self.catalog.confirm(name)
        self.done.add(node)
        self.logger.info("Completed node: %s", node.name)
        self.logger.info("Completed %d out of %d tasks", len(self.done), len(self.pipeline.nodes))
        self.runner._release_datasets(node, self.catalog, self.load_counts, self.pipeline)
        for name in [*node.inputs, *node.outputs]:
            if self.load_counts[name] < 1:
                self.refs.pop(name, None)

    # ------------------------------------------------------------------ node execution on the driver side

    def _load_inputs(self, node: Node) -> dict[str, Any]:
        def load(name: str) -> Any:
            self.hooks.before_dataset_loaded(dataset_name=name, node=node)
            data = self.refs[name] if name in self.refs else self.catalog.load(name)
            self.hooks.after_dataset_loaded(dataset_name=name, data=data, node=node)
            return data

        if self.is_async and len(node.inputs) > 1:
            with ThreadPoolExecutor() as pool:
                return dict(zip(node.inputs, pool.map(load, node.inputs)))
        return {name: load(name) for name in node.inputs}

    def _inputs_from_hooks(self, node: Node, inputs: dict[str, Any]) -> dict[str, Any]:
        responses = self.hooks.before_node_run(
            node=node, catalog=self.catalog, inputs=dict(inputs), is_async=self.is_async, run_id=self.run_id
        )
        updated: dict[str, Any] = {}
        for response in responses or []:
            if response is not None and not isinstance(response, dict):
                raise TypeError(
                    "'before_node_run' must return either None or a dictionary mapping dataset names to updated "
                    f"values, got '{type(response).__name__}' instead."
                )
            updated.update(response or {})
        return updated

    def _node_error(self, running: _Running, error: Exception) -> Exception:
        """The node's own exception out of Ray's wrapper, noted with the node's name and remote traceback."""
        cause = getattr(error, "cause", None)
        exc = cause if isinstance(cause, Exception) else error
        exc.add_note(f"Raised by node '{running.node.name}' running as a Ray task.")
        remote_traceback = getattr(error, "traceback_str", "")
        if exc is cause and remote_traceback:
            exc.add_note("Remote traceback:\n" + _ANSI_ESCAPE.sub("", remote_traceback).rstrip())
        self.logger.error("Node '%s' failed: %s: %s", running.node.name, type(exc).__name__, exc)
        self.hooks.on_node_error(
            error=exc,
            node=running.node,
            catalog=self.catalog,
            inputs=running.inputs,
            is_async=self.is_async,
            run_id=self.run_id,
        )
        return exc

    def _save_outputs(self, running: _Running) -> None:
        node = running.node
        names = list(node.outputs)
        refs = dict(zip(names, running.output_refs))
        keep_as_ref = {name for name in names if name in self.ref_passed and not self.runner._materialize}
        fetch = [name for name in names if name not in keep_as_ref]
        outputs: dict[str, Any] = {name: refs[name] for name in keep_as_ref}
        outputs.update(zip(fetch, (_owned(value) for value in ray.get([refs[name] for name in fetch]))))
        outputs = {name: outputs[name] for name in names}
        for name in names:
            if name in self.ref_passed:
                self.refs[name] = refs[name]
        self._after_node_run(running, outputs)
        self._save(node, outputs, skip_catalog=keep_as_ref)

    def _save_next_chunk(self, running: _Running) -> bool:
        """Saves the next chunk of a generator node; True when the stream has ended."""
        try:
            chunk_ref = next(running.stream)
        except StopIteration:
            return True
        try:
            name, chunk = ray.get(chunk_ref)
        except ray.exceptions.RayError as error:
            raise self._node_error(running, error) from None
        self._save(running.node, {name: chunk})
        running.last_chunks[name] = chunk
        return False

    def _save(self, node: Node, outputs: dict[str, Any], skip_catalog: Iterable[str] = ()) -> None:
        skip = set(skip_catalog)

        def save(name: str, data: Any) -> None:
            self.hooks.before_dataset_saved(dataset_name=name, data=data, node=node)
            if name not in skip:
                self.catalog.save(name, data)
            self.hooks.after_dataset_saved(dataset_name=name, data=data, node=node)

        if self.is_async and len(outputs) > 1:
            with ThreadPoolExecutor() as pool:
                for future in [pool.submit(save, name, data) for name, data in outputs.items()]:
                    future.result()
        else:
            for name, data in outputs.items():
                save(name, data)

    def _after_node_run(self, running: _Running, outputs: dict[str, Any]) -> None:
        self.hooks.after_node_run(
            node=running.node,
            catalog=self.catalog,
            inputs=running.inputs,
            outputs=outputs,
            is_async=self.is_async,
            run_id=self.run_id,
        )

    def _run_on_driver(self, node: Node, inputs: dict[str, Any]) -> None:
        """Runs ``node`` in this process (its inputs cannot travel); outputs are saved through the catalog."""
        running = _Running(node, inputs)
        values = {name: ray.get(v) if isinstance(v, ray.ObjectRef) else v for name, v in inputs.items()}
        try:
            outputs = node.run(values)
        except Exception as exc:
            exc.add_note(f"Raised by node '{node.name}' running in the driver process.")
            self.hooks.on_node_error(
                error=exc, node=node, catalog=self.catalog, inputs=inputs, is_async=self.is_async, run_id=self.run_id
            )
            raise
        if inspect.isgeneratorfunction(node.func):
            for name, chunk in _interleave_chunks(outputs):
                self._save(node, {name: chunk})
                running.last_chunks[name] = chunk
            self._after_node_run(running, running.last_chunks)
        else:
            self._after_node_run(running, outputs)
            self._save(node, outputs)
        self._finish(node)


def _owned(value: Any) -> Any:
    """``value`` with buffers of its own: ``ray.get`` maps numpy buffers read-only from the object store, and
    savers that write into what they save (matplotlib's ``savefig`` on a figure's arrays) fail on those."""
    # protocol 4: numpy rebuilds arrays from a copy of their bytes, writable (5 would keep the read-only flag)
    return cloudpickle.loads(cloudpickle.dumps(value, protocol=4))


def _consume_errors(refs: list[ray.ObjectRef]) -> None:
    # Outputs of a failed task all hold its error; reading them keeps Ray from reporting each as unhandled.
    for ref in refs:
        try:
            ray.get(ref)
        except ray.exceptions.RayError:
            pass


def _format_options(options: dict[str, Any]) -> str:
    return ", ".join(f"{key}={value:g}" for key, value in options.items() if key != "name")
