"""The read step of the Ray Data source pipeline: one shard name → its samples as rows.

Kept apart from the model code on purpose: Ray imports a task's module in every worker that runs it, and this one
needs only the shard reader, not torch, so reader workers start in a fraction of a second.
"""
from __future__ import annotations

import json
from typing import Any

from multimodal_suite.common.webdataset_shards import SampleProblem, WebDatasetShards, shard_problems

NO_END = -1
"""``end_total`` of every row but a shard's end marker."""


def read_shard_rows(view: WebDatasetShards, item: dict[str, Any]) -> list[dict[str, Any]]:
    """Ray ``flat_map``: one shard name → its samples, its problems (one row per sample) and an end marker."""
    shard = str(item["shard"])
    problems: list[SampleProblem] = []
    rows: list[dict[str, Any]] = []
    for sample in view.iter_samples(shard, on_problem=problems.append):
        rows.append({"shard": shard, "seq": len(rows), "sample_key": sample.key, "image": sample.image_bytes,
                     "tags_json": json.dumps(sample.tags), "problem": "", "end_total": NO_END})
    seen = {str(row["sample_key"]) for row in rows}
    for sample_key, reason in shard_problems(view, shard, problems, seen).items():
        rows.append({"shard": shard, "seq": len(rows), "sample_key": sample_key, "image": b"",
                     "tags_json": "null", "problem": reason, "end_total": NO_END})
    rows.append({"shard": shard, "seq": len(rows), "sample_key": "", "image": b"", "tags_json": "null",
                 "problem": "", "end_total": len(rows)})
    return rows
