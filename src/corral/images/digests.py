"""Digests and canonical bytes: the two things every content address is made of."""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path
from typing import Any

from corral.errors import UsageError

ALGORITHM = "sha256"
_DIGEST = re.compile(r"^sha256:[0-9a-f]{64}$")


def canonical_json(value: Any) -> bytes:
    """One byte spelling for one value (sorted keys, compact, UTF-8), so digests are stable."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def digest_bytes(data: bytes) -> str:
    return f"{ALGORITHM}:{hashlib.sha256(data).hexdigest()}"


def hash_file(path: Path) -> tuple[str, int]:
    """(hex sha256, size) of a file's content, read in chunks (never whole into memory)."""
    with open(path, "rb", buffering=0) as handle:
        digest = hashlib.file_digest(handle, "sha256")
        size = handle.tell()
    return digest.hexdigest(), size


def is_digest(value: str) -> bool:
    return bool(_DIGEST.match(value))


def hex_of(digest: str) -> str:
    """The hex part of "sha256:<hex>"; a malformed digest is a usage error, never a path."""
    if not is_digest(digest):
        raise UsageError(
            f"{digest!r} is not an image digest",
            hint="a digest looks like sha256:<64 lowercase hex digits>; "
            "`corral images` lists the known ones",
        )
    return digest.split(":", 1)[1]
