"""Rejects: items skipped with a reason, collected into one report table per pipeline.

Every skip in every pipeline goes through here, so a report always has the same columns.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

logger = logging.getLogger(__name__)

REJECT_COLUMNS = ["stage", "item", "reason", "detail"]


@dataclass
class Rejects:
    """Accumulates ``(stage, item, reason, detail)`` rows and logs each one as it is added."""

    stage: str
    rows: list[dict[str, Any]] = field(default_factory=list)

    def add(self, item: str, reason: str, detail: str = "", *, log: bool = True) -> None:
        """Record that ``item`` was skipped (or degraded) for ``reason``."""
        self.rows.append({"stage": self.stage, "item": str(item), "reason": reason, "detail": str(detail)})
        if log:
            logger.warning("%s: %s — %s%s; see the rejects report", self.stage, item, reason, f" ({detail})" if detail else "")

    def extend(self, other: "Rejects | list[dict[str, Any]]") -> None:
        """Append the rows of another collector (or plain row dicts)."""
        self.rows.extend(other.rows if isinstance(other, Rejects) else other)

    def __len__(self) -> int:
        return len(self.rows)

    def to_frame(self) -> pd.DataFrame:
        """The rows as a DataFrame with the standard columns (empty frame when nothing was rejected)."""
        return pd.DataFrame(self.rows, columns=REJECT_COLUMNS)


def combine_rejects(*frames: pd.DataFrame) -> pd.DataFrame:
    """Concatenate reject tables from several nodes into one report."""
    present = [frame for frame in frames if frame is not None and len(frame)]
    if not present:
        return pd.DataFrame(columns=REJECT_COLUMNS)
    return pd.concat(present, ignore_index=True)[REJECT_COLUMNS]
