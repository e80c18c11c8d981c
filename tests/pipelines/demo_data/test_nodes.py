"""demo_data nodes: byte-identical outputs for the same parameters, in this process and in a fresh one."""
from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from typing import Any

import pytest

from multimodal_suite.common.params import ParamsError
from multimodal_suite.pipelines.demo_data.nodes import generate_comic_books, generate_tagging_samples

BOOKS = {"seed": 11, "num_books": 5, "min_pages": 12, "max_pages": 14, "long_book_pages": 0, "unpadded_books": 1}
TAGGING = {"seed": 11, "num_shards": 2, "samples_per_shard": 16, "images_per_folder": 3}

# A fresh interpreter with another hash seed: nothing generated may depend on set or dict-of-hash order.
DIGEST_SCRIPT = """
import json, sys
from test_nodes import digest
from multimodal_suite.pipelines.demo_data.nodes import generate_comic_books, generate_tagging_samples
books, tagging = json.loads(sys.argv[1]), json.loads(sys.argv[2])
print(digest(generate_comic_books(books)), digest(generate_tagging_samples(tagging)))
"""


def digest(outputs: tuple[Any, ...]) -> str:
    """sha256 over every output: file dicts by sorted key and bytes, everything else as sorted JSON."""
    sha = hashlib.sha256()
    for output in outputs:
        if isinstance(output, dict) and all(isinstance(value, bytes) for value in output.values()):
            for key in sorted(output):
                sha.update(key.encode() + len(output[key]).to_bytes(8, "big") + output[key])
        else:
            sha.update(json.dumps(output, sort_keys=True).encode())
    return sha.hexdigest()


def test_same_params_give_the_same_bytes_in_a_fresh_process() -> None:
    books, tagging = generate_comic_books(BOOKS), generate_tagging_samples(TAGGING)
    assert generate_comic_books(dict(BOOKS)) == books and generate_tagging_samples(dict(TAGGING)) == tagging
    env = dict(os.environ, PYTHONHASHSEED="12345")
    env["PYTHONPATH"] = os.pathsep.join([os.path.dirname(__file__), env.get("PYTHONPATH", "")])
    result = subprocess.run(
        [sys.executable, "-c", DIGEST_SCRIPT, json.dumps(BOOKS), json.dumps(TAGGING)],
        env=env, capture_output=True, text=True, check=True,
    )
    assert result.stdout.split() == [digest(books), digest(tagging)]


def test_yaml_shaped_params_give_the_same_bytes() -> None:
    as_yaml = dict(TAGGING, image_size=[160, 160], target_folders=["00290", "00291"])
    assert digest(generate_tagging_samples(as_yaml)) == digest(generate_tagging_samples(TAGGING))


@pytest.mark.parametrize(
    ("node", "params", "section"),
    [(generate_comic_books, {"num_book": 3}, "demo_data"),
     (generate_tagging_samples, {"shard": 3}, "demo_data_tagging")],
)
def test_unknown_key_fails_before_generating(node: Any, params: dict, section: str) -> None:
    with pytest.raises(ParamsError, match=rf"params:{section} has unknown key"):
        node(params)
