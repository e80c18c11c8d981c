"""EmbeddingShardDataset: round trips, appends, crash safety, concurrent writers, lookups and catalog
construction."""
from __future__ import annotations

import doctest
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from kedro.io import DataCatalog, DatasetError
from kedro.pipeline import Node, Pipeline
from kedro.runner import SequentialRunner

import multimodal_suite.common.locks as locks_module
import multimodal_suite.datasets.embedding_shard_dataset as embedding_shards_module
from multimodal_suite.common.atomic import host_tag
from multimodal_suite.common.embeddings import EmbeddingShards, EmbeddingTable
from multimodal_suite.common.locks import FileLock, Owner, this_host
from multimodal_suite.datasets import EmbeddingShardDataset

DIM = 8


def make_table(keys: list[str], dim: int = DIM, book_id: str = "b1", seed: int = 0) -> EmbeddingTable:
    """Unit vectors with ids derived from the keys."""
    rng = np.random.default_rng(seed)
    vectors = rng.standard_normal((len(keys), dim)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    rows = pd.DataFrame({"key": keys, "book_id": book_id, "page_index": np.arange(len(keys))})
    return EmbeddingTable(vectors, rows, model_spec_hash="spec-a")


def keys_of(prefix: str, n: int) -> list[str]:
    return [f"{prefix}{i:03d}" for i in range(n)]


def manifest_of(path: Path) -> dict:
    return json.loads((path / "manifest.json").read_text())


@pytest.fixture
def shard_dir(tmp_path: Path) -> Path:
    return tmp_path / "page_embeddings"


@pytest.mark.parametrize(("dtype", "atol"), [("float16", 1e-3), ("float32", 0.0)])
def test_round_trip(shard_dir: Path, dtype: str, atol: float) -> None:
    table = make_table(keys_of("k", 10))
    dataset = EmbeddingShardDataset(filepath=str(shard_dir), dtype=dtype)
    dataset.save(table)

    shards = dataset.load()
    assert isinstance(shards, EmbeddingShards)
    assert (len(shards), shards.dim, shards.dtype) == (10, DIM, dtype)
    assert shards.model_spec_hashes == ["spec-a"]
    loaded = shards.to_table()
    assert loaded.embeddings.dtype == np.float32
    np.testing.assert_allclose(loaded.embeddings, table.embeddings, atol=atol, rtol=0)
    pd.testing.assert_frame_equal(loaded.rows, table.rows)
    assert loaded.model_spec_hash == "spec-a"

    manifest = manifest_of(shard_dir)
    assert manifest["format_version"] == 1
    assert manifest["parts"][0]["name"] == "part-00000"
    assert (manifest["dim"], manifest["dtype"], manifest["count"]) == (DIM, dtype, 10)
    assert sorted(p.name for p in shard_dir.iterdir()) == [
        "manifest.json",
        "part-00000.parquet",
        "part-00000.safetensors",
    ]


def test_load_is_memory_mapped_and_mmap_can_be_disabled(shard_dir: Path) -> None:
    table = make_table(keys_of("k", 5))
    EmbeddingShardDataset(filepath=str(shard_dir), dtype="float32").save(table)

    mapped = EmbeddingShardDataset(filepath=str(shard_dir)).load()
    mapped.get(["k001"])
    assert isinstance(mapped._part_vectors(0), np.memmap)

    in_memory = EmbeddingShardDataset(filepath=str(shard_dir), load_args={"mmap": False}).load()
    np.testing.assert_array_equal(in_memory.get(["k003", "k001"]), table.embeddings[[3, 1]])
    assert not isinstance(in_memory._part_vectors(0), np.memmap)


def test_two_saves_append_two_parts(shard_dir: Path) -> None:
    first, second = make_table(keys_of("a", 4), seed=1), make_table(keys_of("b", 3), book_id="b2", seed=2)
    dataset = EmbeddingShardDataset(filepath=str(shard_dir), dtype="float32")
    dataset.save(first)
    dataset.save(second)

    shards = dataset.load()
    assert len(shards) == 7
    assert shards.part_names == ["part-00000", "part-00001"]
    np.testing.assert_array_equal(shards.get(["b002", "a000"]), np.stack([second.embeddings[2], first.embeddings[0]]))
    parts = list(shards.iter_parts())
    assert [len(part) for part in parts] == [4, 3]
    assert shards.rows[["_part", "_row"]].values.tolist()[3:5] == [["part-00000", 3], ["part-00001", 0]]


def test_generator_node_writes_one_part_per_chunk_and_reruns_append(shard_dir: Path) -> None:
    dataset = EmbeddingShardDataset(filepath=str(shard_dir))
    catalog = DataCatalog({"page_embeddings": dataset})
    batches = [keys_of("a", 3), keys_of("b", 3), keys_of("c", 2)]

    def embed_pages() -> Iterator[EmbeddingTable]:
        # Kedro streams chunk by chunk only for generator functions, not for functions returning a generator
        for i, keys in enumerate(batches):
            yield make_table(keys, seed=i)

    pipeline = Pipeline([Node(embed_pages, inputs=None, outputs="page_embeddings", name="embed_pages")])

    SequentialRunner().run(pipeline, catalog)
    shards = catalog.load("page_embeddings")
    assert shards.part_names == ["part-00000", "part-00001", "part-00002"]
    assert len(shards) == 8

    # a second run re-yields one known batch and one new one: only the new keys are appended
    batches[:] = [keys_of("b", 3), keys_of("d", 2)]
    SequentialRunner().run(pipeline, DataCatalog({"page_embeddings": EmbeddingShardDataset(filepath=str(shard_dir))}))
    shards = catalog.load("page_embeddings")
    assert shards.part_names == ["part-00000", "part-00001", "part-00002", "part-00003"]
    assert len(shards) == 10
    assert set(shards.keys) == set(keys_of("a", 3) + keys_of("b", 3) + keys_of("c", 2) + keys_of("d", 2))


def test_crash_between_part_and_manifest_keeps_previous_data(
    shard_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    first = make_table(keys_of("a", 4), seed=1)
    dataset = EmbeddingShardDataset(filepath=str(shard_dir), dtype="float32")
    dataset.save(first)
    manifest_before = manifest_of(shard_dir)

    def crash(self: EmbeddingShardDataset, manifest: dict) -> None:
        raise OSError("disk gone")

    monkeypatch.setattr(EmbeddingShardDataset, "_write_manifest", crash)
    with pytest.raises(DatasetError, match="disk gone"):
        dataset.save(make_table(keys_of("b", 3), seed=2))
    monkeypatch.undo()

    # the orphan part is on disk, the manifest and the loaded data are as before
    assert (shard_dir / "part-00001.safetensors").exists() and (shard_dir / "part-00001.parquet").exists()
    assert manifest_of(shard_dir) == manifest_before
    shards = EmbeddingShardDataset(filepath=str(shard_dir)).load()
    assert len(shards) == 4 and shards.part_names == ["part-00000"]
    assert not shards.contains("b000")
    np.testing.assert_array_equal(shards.to_table().embeddings, first.embeddings)

    # the retry appends the same keys as a new part number; the orphan is never listed or overwritten
    orphan_bytes = (shard_dir / "part-00001.safetensors").read_bytes()
    retry = make_table(keys_of("b", 3), seed=3)
    EmbeddingShardDataset(filepath=str(shard_dir), dtype="float32").save(retry)
    shards = EmbeddingShardDataset(filepath=str(shard_dir)).load()
    assert shards.part_names == ["part-00000", "part-00002"]
    assert len(shards) == 7
    np.testing.assert_array_equal(shards.get(keys_of("b", 3)), retry.embeddings)
    assert (shard_dir / "part-00001.safetensors").read_bytes() == orphan_bytes
    assert not [p for p in shard_dir.iterdir() if p.name.endswith(".tmp")]


def test_crash_while_writing_a_part_leaves_no_partial_file(
    shard_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    dataset = EmbeddingShardDataset(filepath=str(shard_dir))
    dataset.save(make_table(keys_of("a", 2)))

    def failing_to_parquet(*args: object, **kwargs: object) -> None:
        raise OSError("killed mid-write")

    monkeypatch.setattr(pd.DataFrame, "to_parquet", failing_to_parquet)
    with pytest.raises(DatasetError, match="killed mid-write"):
        dataset.save(make_table(keys_of("b", 2)))
    monkeypatch.undo()

    assert not (shard_dir / "part-00001.parquet").exists()
    assert not [p for p in shard_dir.iterdir() if p.name.endswith(".tmp")]
    assert len(dataset.load()) == 2
    dataset.save(make_table(keys_of("b", 2)))
    assert dataset.load().part_names == ["part-00000", "part-00002"]


def test_wrong_dim_append_is_rejected(shard_dir: Path) -> None:
    dataset = EmbeddingShardDataset(filepath=str(shard_dir))
    dataset.save(make_table(keys_of("a", 2), dim=DIM))
    with pytest.raises(DatasetError, match=r"holds 8-dim embeddings; cannot append 2 vectors of dim 4") as error:
        dataset.save(make_table(keys_of("b", 2), dim=4))
    assert isinstance(error.value.__cause__, ValueError)
    assert str(shard_dir) in str(error.value)
    assert len(dataset.load()) == 2


def test_stored_keys_are_not_appended_twice(shard_dir: Path) -> None:
    dataset = EmbeddingShardDataset(filepath=str(shard_dir), dtype="float32")
    first = make_table(keys_of("a", 3), seed=1)
    dataset.save(first)
    dataset.save(first)  # everything known: nothing written
    assert dataset.load().part_names == ["part-00000"]

    overlapping = make_table(keys_of("a", 3) + keys_of("b", 2), seed=2)
    EmbeddingShardDataset(filepath=str(shard_dir), dtype="float32").save(overlapping)  # as a new run would
    shards = dataset.load()
    assert shards.part_names == ["part-00000", "part-00001"]
    assert len(shards) == 5 and len(shards.rows) == 5
    assert shards.rows["key"].is_unique
    # the stored vectors of known keys are kept, not replaced
    np.testing.assert_array_equal(shards.get(keys_of("a", 3)), first.embeddings)
    np.testing.assert_array_equal(shards.get(keys_of("b", 2)), overlapping.embeddings[3:])


def test_lookup_by_key_and_select_by_ids(shard_dir: Path) -> None:
    dataset = EmbeddingShardDataset(filepath=str(shard_dir), dtype="float32")
    book1, book2 = make_table(keys_of("a", 3), book_id="b1", seed=1), make_table(keys_of("b", 4), book_id="b2", seed=2)
    dataset.save(book1)
    dataset.save(book2)
    shards = dataset.load()

    assert shards.contains("a001") and "b003" in shards and not shards.contains("zzz")
    assert {"a000", "zzz"} - shards.keys == {"zzz"}
    assert len(shards.keys) == 7
    np.testing.assert_array_equal(
        shards.get(["b003", "a000", "b003"]),
        np.stack([book2.embeddings[3], book1.embeddings[0], book2.embeddings[3]]),
    )
    assert shards.get([]).shape == (0, DIM)
    with pytest.raises(KeyError, match=r"2 of 3 keys not in .*\['nope', 'gone'\]"):
        shards.get(["a000", "nope", "gone"])

    selected = shards.select(book_id="b2")
    assert selected.keys == keys_of("b", 4)
    np.testing.assert_array_equal(selected.embeddings, book2.embeddings)
    assert list(selected.rows.columns) == ["key", "book_id", "page_index"]

    page_zero = shards.select(page_index=0)
    assert page_zero.keys == ["a000", "b000"]
    np.testing.assert_array_equal(page_zero.embeddings, np.stack([book1.embeddings[0], book2.embeddings[0]]))
    assert shards.select(book_id="b2", page_index=[1, 3]).keys == ["b001", "b003"]
    assert len(shards.select(book_id="nobody")) == 0
    with pytest.raises(KeyError, match="no column 'chapter'"):
        shards.select(chapter=1)


def test_empty_table_creates_a_valid_manifest_and_missing_dir_loads_empty(shard_dir: Path) -> None:
    dataset = EmbeddingShardDataset(filepath=str(shard_dir))
    assert not dataset.exists()
    nothing = dataset.load()
    assert (len(nothing), nothing.dim, len(nothing.keys)) == (0, None, 0)
    assert not nothing.contains("a000")
    assert len(nothing.to_table()) == 0

    dataset.save(EmbeddingTable.empty(DIM))
    assert dataset.exists()
    assert sorted(p.name for p in shard_dir.iterdir()) == ["manifest.json"]
    shards = dataset.load()
    assert (len(shards), shards.dim, shards.part_names) == (0, DIM, [])
    assert shards.get([]).shape == (0, DIM)
    assert len(shards.select()) == 0

    dataset.save(EmbeddingTable.empty(DIM))  # an empty append to an existing store changes nothing
    assert manifest_of(shard_dir)["parts"] == []
    dataset.save(make_table(keys_of("a", 2)))
    assert len(dataset.load()) == 2


def test_catalog_from_yaml_config(shard_dir: Path) -> None:
    catalog = DataCatalog.from_config(
        {
            "page_embeddings": {
                "type": "multimodal_suite.datasets.EmbeddingShardDataset",
                "filepath": str(shard_dir),
                "dtype": "float32",
                "load_args": {"mmap": False},
                "save_args": {"compression": "zstd"},
            }
        }
    )
    table = make_table(keys_of("a", 3))
    catalog.save("page_embeddings", table)
    np.testing.assert_array_equal(catalog.load("page_embeddings").get(table.keys), table.embeddings)
    assert manifest_of(shard_dir)["dtype"] == "float32"
    assert isinstance(catalog["page_embeddings"], EmbeddingShardDataset)


def test_preview_reports_counts_and_first_rows(shard_dir: Path) -> None:
    dataset = EmbeddingShardDataset(filepath=str(shard_dir))
    assert dataset.preview()["count"] == 0
    dataset.save(make_table(keys_of("a", 7)))
    dataset.save(make_table(keys_of("b", 2)))

    preview = dataset.preview(nrows=3)
    assert (preview["count"], preview["dim"], preview["dtype"], preview["parts"]) == (9, DIM, "float16", 2)
    assert preview["columns"] == ["key", "book_id", "page_index"]
    assert [row[0] for row in preview["data"]] == ["a000", "a001", "a002"]
    json.dumps(preview)  # kedro-viz serialises it


def test_dtype_is_fixed_by_the_existing_store(shard_dir: Path) -> None:
    EmbeddingShardDataset(filepath=str(shard_dir), dtype="float32").save(make_table(keys_of("a", 2)))
    EmbeddingShardDataset(filepath=str(shard_dir), dtype="float16").save(make_table(keys_of("b", 2)))
    manifest = manifest_of(shard_dir)
    assert manifest["dtype"] == "float32"
    assert [part["dtype"] for part in manifest["parts"]] == ["float32", "float32"]


def test_float16_overflow_is_rejected(shard_dir: Path) -> None:
    table = make_table(keys_of("a", 2))
    table.embeddings[0, 0] = 1e6
    with pytest.raises(DatasetError, match="overflow float16"):
        EmbeddingShardDataset(filepath=str(shard_dir)).save(table)


def test_unknown_dtype_and_wrong_input_type_are_rejected(shard_dir: Path) -> None:
    with pytest.raises(ValueError, match="dtype must be one of"):
        EmbeddingShardDataset(filepath=str(shard_dir), dtype="int8")
    with pytest.raises(DatasetError, match="saves EmbeddingTable objects; got DataFrame"):
        EmbeddingShardDataset(filepath=str(shard_dir)).save(pd.DataFrame({"key": ["a"]}))


@pytest.mark.parametrize(
    ("embeddings", "rows", "message"),
    [
        (np.zeros(3, np.float32), pd.DataFrame({"key": ["a", "b", "c"]}), "must be 2-D"),
        (np.zeros((3, 2), np.int64), pd.DataFrame({"key": ["a", "b", "c"]}), "floating point"),
        (np.zeros((3, 2), np.float32), pd.DataFrame({"key": ["a", "b"]}), "2 rows for 3 embeddings"),
        (np.zeros((2, 2), np.float32), pd.DataFrame({"id": ["a", "b"]}), "need a 'key' column"),
        (np.zeros((2, 2), np.float32), pd.DataFrame({"key": ["a", "a"]}), "1 duplicate keys"),
        (np.zeros((2, 2), np.float32), pd.DataFrame({"key": ["a", 3]}), "not strings"),
    ],
)
def test_embedding_table_validation(embeddings: np.ndarray, rows: pd.DataFrame, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        EmbeddingTable(embeddings, rows)


def test_docstring_examples_run(tmp_path: Path) -> None:
    result = doctest.testmod(embedding_shards_module, extraglobs={"tmp_path": tmp_path}, raise_on_error=False)
    assert result.attempted > 0 and result.failed == 0


def test_non_local_filesystem_round_trip() -> None:
    filepath = "memory://embedding-shards-test/page_embeddings"
    dataset = EmbeddingShardDataset(filepath=filepath, dtype="float32")
    first, second = make_table(keys_of("a", 3), seed=1), make_table(keys_of("b", 2), seed=2)
    dataset.save(first)
    dataset.save(second)
    shards = EmbeddingShardDataset(filepath=filepath).load()
    assert shards.part_names == ["part-00000", "part-00001"]
    np.testing.assert_array_equal(shards.get(["b001", "a000"]), np.stack([second.embeddings[1], first.embeddings[0]]))
    assert dataset.preview()["count"] == 5


# A writer process: imports first, says "ready", waits for "go" on stdin so that both writers really overlap,
# then appends its keys in many small parts.
WRITER = """
import sys
import numpy as np, pandas as pd
from multimodal_suite.common.embeddings import EmbeddingTable
from multimodal_suite.datasets import EmbeddingShardDataset
path, prefix, n_keys, part_size = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
dataset = EmbeddingShardDataset(filepath=path, dtype="float32")
print("ready", flush=True)
sys.stdin.readline()
for start in range(0, n_keys, part_size):
    keys = [f"{prefix}{i:04d}" for i in range(start, min(start + part_size, n_keys))]
    vectors = np.array([[float(int(key[1:])), 1.0 if prefix == "a" else 2.0] for key in keys], dtype=np.float32)
    dataset.save(EmbeddingTable(vectors, pd.DataFrame({"key": keys})))
print("done", flush=True)
"""


def start_python(code: str, *args: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-c", code, *args], stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True,
    )


def await_line(process: subprocess.Popen, expected: str) -> None:
    """Block until ``process`` prints ``expected``; fail with what it wrote if it exits first."""
    line = process.stdout.readline().strip()
    if line != expected:
        process.kill()
        _, stderr = process.communicate()
        pytest.fail(f"expected {expected!r} from the child, got {line!r}; stderr:\n{stderr[-3000:]}")


def test_two_processes_appending_at_once_lose_nothing(shard_dir: Path) -> None:
    n_keys, part_size = 400, 10
    writers = [start_python(WRITER, str(shard_dir), prefix, str(n_keys), str(part_size)) for prefix in ("a", "b")]
    for writer in writers:
        await_line(writer, "ready")
    for writer in writers:
        writer.stdin.write("go\n")
        writer.stdin.flush()
    # the limit only keeps a hung writer from hanging the suite; it is far beyond any machine's need
    results = [writer.communicate(timeout=1800) for writer in writers]
    for writer, (stdout, stderr) in zip(writers, results):
        assert writer.returncode == 0 and stdout.strip() == "done", stderr[-3000:]

    manifest = manifest_of(shard_dir)
    names = [part["name"] for part in manifest["parts"]]
    assert len(names) == len(set(names)) == 2 * n_keys // part_size
    assert manifest["count"] == 2 * n_keys == sum(part["rows"] for part in manifest["parts"])
    shards = EmbeddingShardDataset(filepath=str(shard_dir)).load()
    expected = [f"{prefix}{i:04d}" for prefix in ("a", "b") for i in range(n_keys)]
    assert set(shards.keys) == set(expected) and shards.rows["key"].is_unique
    vectors = shards.get(expected)
    np.testing.assert_array_equal(vectors[:, 0], [float(i) for _ in range(2) for i in range(n_keys)])
    np.testing.assert_array_equal(vectors[:, 1], [1.0] * n_keys + [2.0] * n_keys)
    # every part file on disk is listed: no writer's part was written and then dropped from the manifest
    on_disk = {p.name.split(".")[0] for p in shard_dir.iterdir() if p.name.startswith("part-")}
    assert on_disk == set(names)
    assert sorted(p.name for p in shard_dir.iterdir() if p.name.startswith(".")) == []


# Opens a temporary sibling of a part as a save does, says "writing", and stays in the middle of the write.
HALF_WRITER = """
import sys, time
from multimodal_suite.common.atomic import atomic_path
with atomic_path(sys.argv[1]) as tmp:
    tmp.write_bytes(b"x" * 1_000_000)
    print("writing", flush=True)
    time.sleep(3600)
"""


def temporaries(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir() if p.name.endswith(".tmp"))


def test_a_killed_writers_temporary_is_removed_and_a_live_writers_kept(shard_dir: Path) -> None:
    dataset = EmbeddingShardDataset(filepath=str(shard_dir))
    dataset.save(make_table(keys_of("a", 2)))
    killed = start_python(HALF_WRITER, str(shard_dir / "part-00005.safetensors"))
    live = start_python(HALF_WRITER, str(shard_dir / "part-00006.parquet"))
    try:
        await_line(killed, "writing")
        await_line(live, "writing")
        killed.send_signal(signal.SIGKILL)
        killed.wait()
        killed_tmp = f".part-00005.safetensors.{killed.pid}@{host_tag(this_host())}."
        live_tmp = f".part-00006.parquet.{live.pid}@{host_tag(this_host())}."
        names = temporaries(shard_dir)
        assert len(names) == 2 and names[0].startswith(killed_tmp) and names[1].startswith(live_tmp)
        # debris without an owner tag is judged by its age: an old one goes, a fresh one stays
        old, fresh = shard_dir / ".manifest.json.k3y9xq2b.tmp", shard_dir / ".manifest.json.z8w1m0pq.tmp"
        old.write_bytes(b"{")
        fresh.write_bytes(b"{")
        two_hours_ago = time.time() - 7200
        os.utime(old, (two_hours_ago, two_hours_ago))

        dataset.save(make_table(keys_of("b", 2)))

        remaining = temporaries(shard_dir)
        assert [name for name in remaining if name.startswith(live_tmp)] and fresh.name in remaining
        assert not [name for name in remaining if name.startswith(killed_tmp)] and old.name not in remaining
        assert len(dataset.load()) == 4
    finally:
        for process in (killed, live):
            process.kill()
            process.communicate()


def write_lock(shard_dir: Path, owner: Owner) -> Path:
    shard_dir.mkdir(parents=True, exist_ok=True)
    lock = shard_dir / embedding_shards_module.LOCK_NAME
    lock.write_bytes(owner.to_bytes())
    return lock


def dead_pid() -> int:
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


@pytest.mark.parametrize(
    "owner",
    [
        Owner(pid=0, host=this_host(), time=time.time(), token="dead-here"),  # pid filled in below
        Owner(pid=1, host="elsewhere", time=time.time() - 2 * locks_module.STALE_AFTER_S, token="old-remote"),
    ],
    ids=["dead-owner-on-this-host", "owner-elsewhere-older-than-timeout"],
)
def test_save_breaks_a_stale_lock(shard_dir: Path, owner: Owner) -> None:
    if owner.token == "dead-here":
        owner = Owner(pid=dead_pid(), host=owner.host, time=time.time(), token=owner.token)
    lock = write_lock(shard_dir, owner)
    EmbeddingShardDataset(filepath=str(shard_dir)).save(make_table(keys_of("a", 3)))
    assert len(EmbeddingShardDataset(filepath=str(shard_dir)).load()) == 3
    assert not lock.exists()


def test_save_waits_for_a_live_lock(shard_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    dataset = EmbeddingShardDataset(filepath=str(shard_dir))
    dataset.save(make_table(keys_of("a", 2)))
    holder = FileLock(dataset._fs, str(shard_dir / embedding_shards_module.LOCK_NAME))
    holder.acquire()
    waits: list[int] = []

    def sleep_then_release(seconds: float) -> None:
        # the save must still be waiting: nothing of its part is written while another process holds the lock
        waits.append(len(manifest_of(shard_dir)["parts"]))
        if len(waits) == 3:
            holder.release()

    monkeypatch.setattr(locks_module.time, "sleep", sleep_then_release)
    dataset.save(make_table(keys_of("b", 2)))
    assert waits == [1, 1, 1]
    assert dataset.load().part_names == ["part-00000", "part-00001"]
    assert not (shard_dir / embedding_shards_module.LOCK_NAME).exists()


def test_a_writer_whose_lock_was_broken_does_not_replace_the_manifest(
    shard_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    dataset = EmbeddingShardDataset(filepath=str(shard_dir), dtype="float32")
    dataset.save(make_table(keys_of("a", 2)))
    before = manifest_of(shard_dir)
    original = EmbeddingShardDataset._next_part_number

    def taken_over_meanwhile(self: EmbeddingShardDataset, manifest: dict) -> int:
        # another process judged this save stale and took the lock while the part was being prepared
        write_lock(shard_dir, Owner(pid=os.getpid(), host=this_host(), time=time.time(), token="new-holder"))
        return original(self, manifest)

    monkeypatch.setattr(EmbeddingShardDataset, "_next_part_number", taken_over_meanwhile)
    with pytest.raises(DatasetError, match="lost the lock"):
        dataset.save(make_table(keys_of("b", 2)))
    assert manifest_of(shard_dir) == before
    # the new holder's lock is left alone
    assert Owner.from_bytes((shard_dir / embedding_shards_module.LOCK_NAME).read_bytes()).token == "new-holder"
