"""Stable content hashing for cache keys.

Keys must not change between runs, processes or Python versions, so nothing here uses ``hash()`` or pickle.
"""
from __future__ import annotations

import hashlib
import json
from typing import Any

_KEY_BYTES = 16  # 128-bit blake2b digests: collision-free for any realistic collection, short in parquet


def stable_json(obj: Any) -> str:
    """Canonical JSON (sorted keys, no whitespace) of a JSON-like object."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)


def hash_object(obj: Any) -> str:
    """Hex digest of a JSON-like object (dict order does not matter)."""
    return hashlib.blake2b(stable_json(obj).encode("utf-8"), digest_size=_KEY_BYTES).hexdigest()


def content_key(*parts: bytes | str | None) -> str:
    """Hex digest over several byte/str parts; each part is length-prefixed so ("ab", "c") != ("a", "bc")."""
    digest = hashlib.blake2b(digest_size=_KEY_BYTES)
    for part in parts:
        if part is None:
            digest.update(b"\xff" * 8)
            continue
        data = part.encode("utf-8") if isinstance(part, str) else bytes(part)
        digest.update(len(data).to_bytes(8, "little"))
        digest.update(data)
    return digest.hexdigest()
