import json

import pytest

from multimodal_suite.common.atomic import atomic_path, atomic_write_json
from multimodal_suite.common.hashing import content_key, hash_object


def test_hash_object_ignores_key_order_and_changes_with_values():
    assert hash_object({"a": 1, "b": [1, 2]}) == hash_object({"b": [1, 2], "a": 1})
    assert hash_object({"a": 1}) != hash_object({"a": 2})


def test_content_key_parts_are_length_prefixed():
    assert content_key("ab", "c") != content_key("a", "bc")
    assert content_key(b"x", "y") == content_key("x", b"y")
    assert content_key("x", None) != content_key("x", "")
    assert len(content_key("x")) == 32


def test_atomic_write_replaces_whole_file(tmp_path):
    target = tmp_path / "sub" / "out.json"
    atomic_write_json(target, {"v": 1})
    atomic_write_json(target, {"v": 2})
    assert json.loads(target.read_text()) == {"v": 2}
    assert [p.name for p in target.parent.iterdir()] == ["out.json"]


def test_failed_atomic_write_keeps_old_file_and_leaves_no_temp(tmp_path):
    target = tmp_path / "out.txt"
    target.write_text("old")
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("crash mid-write")
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["out.txt"]
