"""kedro-viz on the project: the static site of ``kedro viz build`` and the server of ``kedro viz run``.

Both run as the CLI does, in a scratch copy of the project's configuration (data, .viz and build stay there).
Nothing here depends on the machine's speed: the server is awaited on its answer, polling, with deadlines meant
only to stop a hung command on a heavily loaded machine, and a timeout reports what the command printed.
"""
from __future__ import annotations

import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
import yaml
from kedro.io.catalog_config_resolver import CatalogConfigResolver

from multimodal_suite.pipeline_registry import register_pipelines

PROJECT_ROOT = Path(__file__).resolve().parents[1]
LAYERS = ["raw", "intermediate", "primary", "feature", "model_input", "models", "model_output", "reporting"]
# deadlines for a hung command, not expectations of speed: a machine at load 20 needs minutes to start kedro-viz
BUILD_TIMEOUT_S = 1200
SERVER_START_TIMEOUT_S = 900
REQUEST_TIMEOUT_S = 60
STOP_TIMEOUT_S = 120
POLL_S = 0.5


def scratch_project(root: Path) -> Path:
    """pyproject, telemetry consent and conf copied to ``root``, with an empty src (the package is installed)."""
    for name in ("pyproject.toml", ".telemetry"):
        shutil.copy(PROJECT_ROOT / name, root / name)
    shutil.copytree(PROJECT_ROOT / "conf", root / "conf", ignore=shutil.ignore_patterns("local"))
    (root / "conf" / "local").mkdir()
    (root / "src").mkdir()
    return root


def kedro_env() -> dict[str, str]:
    """The environment of a user's shell, without the PSS_* overrides that would point at real data."""
    env = {key: value for key, value in os.environ.items() if not key.startswith("PSS_")}
    env.update(HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", PYTHONUNBUFFERED="1")
    return env


def catalog_entries() -> dict[str, dict]:
    """``entry name -> entry`` as written in conf/base/catalog*.yml, factories (``"{system}_rejects"``) included,
    the ``_`` variables left out."""
    entries: dict[str, dict] = {}
    for path in sorted((PROJECT_ROOT / "conf" / "base").glob("catalog*.yml")):
        for name, entry in (yaml.safe_load(path.read_text()) or {}).items():
            if isinstance(entry, dict) and not name.startswith("_"):
                entries[name] = entry
    return entries


def layer_of(entry: dict) -> str | None:
    return ((entry.get("metadata") or {}).get("kedro-viz") or {}).get("layer")


def catalog_layers() -> dict[str, str | None]:
    """``entry name -> kedro-viz layer`` of every entry and factory; kedro-viz draws the variants of a transcoded
    dataset (``name@files``) as one node ``name``."""
    return {name.split("@")[0]: layer_of(entry) for name, entry in catalog_entries().items()}


def expected_layer(dataset: str, entries: dict[str, dict]) -> str | None:
    """The layer of the catalog entry the kedro-viz node ``dataset`` stands for: its own (or its transcoded
    variants') entry, else the factory Kedro ranks first among those it matches, else None (a MemoryDataset
    that no entry describes)."""
    variants = [name for name in entries if name.split("@")[0] == dataset]
    if variants:
        return layer_of(entries[variants[0]])
    resolver = CatalogConfigResolver(config=entries, default_runtime_patterns={"{default}": {"type": "MemoryDataset"}})
    return layer_of(resolver.resolve_pattern(dataset))


@pytest.fixture(scope="module")
def built_site(tmp_path_factory) -> Path:
    """``kedro viz build --include-previews`` run once; the ``build`` folder it writes."""
    project = scratch_project(tmp_path_factory.mktemp("viz_build"))
    try:
        result = subprocess.run(
            [sys.executable, "-m", "kedro", "viz", "build", "--include-previews"],
            cwd=project, env=kedro_env(), capture_output=True, text=True, timeout=BUILD_TIMEOUT_S,
        )
    except subprocess.TimeoutExpired as timeout:
        output = tail_of(timeout.stdout, timeout.stderr)
        pytest.fail(f"kedro viz build still running after {BUILD_TIMEOUT_S} s; it printed:\n{output}")
    site = project / "build"
    assert result.returncode == 0 and (site / "api" / "main").is_file(), result.stdout[-3000:] + result.stderr[-3000:]
    return site


def tail_of(*outputs: str | bytes | None, chars: int = 3000) -> str:
    """The last ``chars`` characters of each captured output, for a failure message."""
    texts = [out.decode(errors="replace") if isinstance(out, bytes) else (out or "") for out in outputs]
    return "\n".join(text[-chars:] for text in texts)


def read_api(site: Path, *parts: str) -> dict:
    return json.loads(site.joinpath("api", *parts).read_text())


def test_every_catalog_entry_has_a_layer() -> None:
    layers = catalog_layers()
    assert layers
    assert {name: layer for name, layer in layers.items() if layer not in LAYERS} == {}


@pytest.mark.slow
def test_build_has_every_pipeline_with_readable_names(built_site: Path) -> None:
    assert (built_site / "index.html").is_file()
    pipelines = register_pipelines()
    main = read_api(built_site, "main")
    assert {pipeline["id"] for pipeline in main["pipelines"]} == set(pipelines)
    assert main["selected_pipeline"] == "__default__"
    for pipeline_id, pipeline in pipelines.items():
        graph = read_api(built_site, "pipelines", pipeline_id)
        tasks = {node["name"] for node in graph["nodes"] if node["type"] == "task"}
        assert tasks == {node.name for node in pipeline.nodes}, pipeline_id
        datasets = {node["name"] for node in graph["nodes"] if node["type"] == "data"}
        # transcoded datasets (``name@files`` / ``name@webdataset``) are one node, under their base name
        assert datasets == {name.split("@")[0] for name in pipeline.datasets() if not name.startswith("params:")}
        # tags of the Kedro nodes are offered as filters
        assert {tag for node in pipeline.nodes for tag in node.tags} <= {tag["id"] for tag in graph["tags"]}


@pytest.mark.slow
def test_build_shows_the_catalog_layers(built_site: Path) -> None:
    main = read_api(built_site, "main")
    expected = catalog_entries()
    data_nodes = {node["name"]: node for node in main["nodes"] if node["type"] == "data"}
    assert data_nodes
    assert {name: node["layer"] for name, node in data_nodes.items()} == {
        name: expected_layer(name, expected) for name in data_nodes
    }
    assert {"raw", "feature", "model_input", "models", "model_output", "reporting"} <= set(main["layers"])
    assert set(main["layers"]) <= set(LAYERS)
    # kedro-viz orders layers by the data flow; in the pss flow that is the project's bottom-to-top order
    assert read_api(built_site, "pipelines", "pss")["layers"] == [
        "raw", "feature", "model_input", "models", "model_output", "reporting"
    ]


@pytest.mark.slow
def test_build_has_the_custom_dataset_previews(built_site: Path) -> None:
    ids = {node["name"]: node["id"] for node in read_api(built_site, "main")["nodes"]}
    books = read_api(built_site, "nodes", ids["comic_books"])
    assert books["preview_type"] == "ImagePreview" and books["preview"]
    shards = read_api(built_site, "nodes", ids["page_image_embeddings"])
    assert shards["preview_type"] == "TablePreview"
    assert {"columns", "data", "count", "dim"} <= set(shards["preview"])


def free_port() -> int:
    """A free port on 127.0.0.1 below 49152: kedro viz refuses ports in the dynamic range (and moves on to the
    next port by itself when the one asked for is taken)."""
    rng = random.Random()
    for _ in range(200):
        port = rng.randrange(20000, 49000)
        with socket.socket() as probe:
            try:
                probe.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError("no free port between 20000 and 49000 on 127.0.0.1")


def port_open(port: int) -> bool:
    with socket.socket() as probe:
        probe.settimeout(1)
        return probe.connect_ex(("127.0.0.1", port)) == 0


def get_json(url: str) -> dict | None:
    """The JSON at ``url``, or None while the server is not answering yet."""
    try:
        with urllib.request.urlopen(url, timeout=REQUEST_TIMEOUT_S) as response:
            return json.loads(response.read())
    except (urllib.error.URLError, ConnectionError, TimeoutError, json.JSONDecodeError):
        return None


def group_alive(leader: subprocess.Popen) -> bool:
    """Whether any process of the process group that ``leader`` heads is still running."""
    leader.poll()  # reap an exited leader: a zombie would still count as a member of its group
    try:
        os.killpg(leader.pid, 0)
    except ProcessLookupError:
        return False
    return True


def await_server(port: int, group: subprocess.Popen, log_path: Path) -> dict:
    """``/api/main`` of the server once it answers, polled until ``SERVER_START_TIMEOUT_S``.

    The CLI's own readiness wait is short and may give up on a loaded machine while its server child goes on
    starting, so the wait lasts while anything in the CLI's process group is alive, not only the CLI.
    """
    deadline = time.monotonic() + SERVER_START_TIMEOUT_S
    while time.monotonic() < deadline and group_alive(group):
        main = get_json(f"http://127.0.0.1:{port}/api/main")
        if main is not None:
            return main
        time.sleep(POLL_S)
    state = "still starting" if group_alive(group) else f"gone (CLI exit code {group.poll()})"
    pytest.fail(
        f"no answer on 127.0.0.1:{port} after up to {SERVER_START_TIMEOUT_S} s; the server is {state}. "
        f"It printed:\n{tail_of(log_path.read_text(errors='replace'))}"
    )


def stop_group(process: subprocess.Popen) -> None:
    """SIGTERM to the whole process group (the server runs in a child process), SIGKILL if it lingers."""
    for sig, wait_s in ((signal.SIGTERM, STOP_TIMEOUT_S / 2), (signal.SIGKILL, STOP_TIMEOUT_S / 2)):
        try:
            os.killpg(process.pid, sig)
        except ProcessLookupError:
            return
        try:
            process.wait(timeout=wait_s)
        except subprocess.TimeoutExpired:
            continue
        # the main process is gone; give its children the same grace before the next signal
        deadline = time.monotonic() + wait_s
        while time.monotonic() < deadline:
            if not group_alive(process):
                return
            time.sleep(0.2)


@pytest.mark.slow
def test_viz_run_serves_on_localhost_and_stops_with_its_process_group(tmp_path: Path) -> None:
    project = scratch_project(tmp_path)
    port = free_port()
    log_path = tmp_path / "viz.log"
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "kedro", "viz", "run", "--host", "127.0.0.1", "--port", str(port), "--no-browser"],
            cwd=project, env=kedro_env(), stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            start_new_session=True,  # its own process group: killing only the CLI leaves the server child behind
        )
    try:
        main = await_server(port, process, log_path)
        assert {pipeline["id"] for pipeline in main["pipelines"]} == set(register_pipelines())
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=REQUEST_TIMEOUT_S) as response:
            assert b"<html" in response.read().lower()
    finally:
        stop_group(process)
    deadline = time.monotonic() + STOP_TIMEOUT_S
    while port_open(port) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not port_open(port), f"port {port} still open once stopped:\n{tail_of(log_path.read_text(errors='replace'))}"
    with pytest.raises(ProcessLookupError):
        os.killpg(process.pid, 0)
