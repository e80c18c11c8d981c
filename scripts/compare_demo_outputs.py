"""Compare the outputs of two ``kedro run --env demo`` runs (e.g. two commits on the same seeds).

    python scripts/compare_demo_outputs.py BEFORE_PROJECT_DIR AFTER_PROJECT_DIR

Each argument is a project directory whose ``data/`` holds a finished demo run. The pss page predictions, the
baseline predictions, the evaluation report and training history, and the tagging tags and evaluation must agree
(tables exactly in ids and labels, probabilities and scores to ``--atol``). Rejects tables are compared by their
items and reasons, wherever each run wrote them. Prints one line per output and exits 1 on any difference.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd

TABLES = {
    "pss page predictions": ("data/07_model_output/pss/page_predictions.parquet", ["book_id", "page_index"]),
    "pss baseline predictions": ("data/07_model_output/pss/baseline_page_predictions.parquet",
                                 ["book_id", "page_index"]),
    "pss training history": (("data/08_reporting/bookbert/training_history.parquet",
                              "data/08_reporting/pss/bookbert_training_history.parquet"), ["epoch"]),
    "tagging tags (00290)": ("data/07_model_output/tagging/target/00290/tags.parquet", ["image", "tag"]),
}
JSONS = {
    "pss evaluation": "data/08_reporting/pss/evaluation.json",
    "tagging evaluation (00290)": "data/08_reporting/tagging/00290_evaluation.json",
    "tagging tags json (00290)": "data/07_model_output/tagging/target/00290/tags.json",
}
REJECTS = {"pss_rejects": "pss", "tagging_rejects": "tagging"}


def _compare_frames(before: pd.DataFrame, after: pd.DataFrame, keys: list[str], atol: float) -> str | None:
    if sorted(before.columns) != sorted(after.columns):
        return f"columns differ: {sorted(set(before.columns) ^ set(after.columns))}"
    before = before.sort_values(keys).reset_index(drop=True)
    after = after.sort_values(keys).reset_index(drop=True)[before.columns]
    if len(before) != len(after):
        return f"{len(before)} vs {len(after)} rows"
    for column in before.columns:
        a, b = before[column], after[column]
        if pd.api.types.is_float_dtype(a) and pd.api.types.is_float_dtype(b):
            worst = float(np.nanmax(np.abs(a.to_numpy() - b.to_numpy()))) if len(a) else 0.0
            if worst > atol:
                return f"column {column!r} differs by up to {worst:.3g}"
        elif not a.astype(str).equals(b.astype(str)):
            return f"column {column!r} differs in {int((a.astype(str) != b.astype(str)).sum())} rows"
    return None


def _compare_json(before, after, atol: float, path: str = "") -> str | None:
    if isinstance(before, dict) and isinstance(after, dict):
        if set(before) != set(after):
            return f"{path or '/'}: keys differ: {sorted(set(before) ^ set(after))}"
        for key in before:
            found = _compare_json(before[key], after[key], atol, f"{path}/{key}")
            if found:
                return found
        return None
    if isinstance(before, list) and isinstance(after, list):
        if len(before) != len(after):
            return f"{path}: {len(before)} vs {len(after)} items"
        for i, (a, b) in enumerate(zip(before, after)):
            found = _compare_json(a, b, atol, f"{path}[{i}]")
            if found:
                return found
        return None
    if isinstance(before, float) or isinstance(after, float):
        if before is None or after is None or abs(float(before) - float(after)) > atol:
            return f"{path}: {before!r} vs {after!r}"
        return None
    return None if before == after else f"{path}: {before!r} vs {after!r}"


def _rejects(project: Path, system: str) -> pd.DataFrame:
    frames = [pd.read_parquet(path) for path in sorted((project / "data").rglob("*rejects*.parquet"))
              if f"/{system}/" in str(path) or path.name.startswith(system)]
    if not frames:
        return pd.DataFrame(columns=["item", "reason"])
    table = pd.concat(frames, ignore_index=True)
    return table[["item", "reason"]].drop_duplicates().sort_values(["item", "reason"]).reset_index(drop=True)


def _first_existing(project: Path, relative: str | tuple[str, ...]) -> Path:
    """The first of the paths an output has had that exists in ``project`` (else the first)."""
    candidates = [project / path for path in ((relative,) if isinstance(relative, str) else relative)]
    return next((path for path in candidates if path.exists()), candidates[0])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("before", type=Path)
    parser.add_argument("after", type=Path)
    parser.add_argument("--atol", type=float, default=1e-6)
    args = parser.parse_args(argv)
    failures = 0

    def report(name: str, problem: str | None) -> None:
        nonlocal failures
        failures += bool(problem)
        print(f"{'DIFFERS' if problem else 'same   '}  {name}" + (f": {problem}" if problem else ""))

    for name, (relative, keys) in TABLES.items():
        paths = [_first_existing(project, relative) for project in (args.before, args.after)]
        if not all(path.exists() for path in paths):
            report(name, f"missing: {[str(p) for p in paths if not p.exists()]}")
            continue
        report(name, _compare_frames(*(pd.read_parquet(path) for path in paths), keys, args.atol))
    for name, relative in JSONS.items():
        paths = [args.before / relative, args.after / relative]
        if not all(path.exists() for path in paths):
            report(name, f"missing: {[str(p) for p in paths if not p.exists()]}")
            continue
        report(name, _compare_json(*(json.loads(path.read_text()) for path in paths), args.atol))
    for name, system in REJECTS.items():
        before, after = _rejects(args.before, system), _rejects(args.after, system)
        merged = before.merge(after, how="outer", indicator=True)
        only_before = int((merged["_merge"] == "left_only").sum())
        only_after = int((merged["_merge"] == "right_only").sum())
        report(f"{name} (items and reasons)", None if not (only_before or only_after) else
               f"{len(before)} vs {len(after)} entries; {only_before} only before, {only_after} only after")
    print("all outputs agree" if not failures else f"{failures} output(s) differ")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
