"""The per-home audit key: keyed hashes of env values (law 5) and MACs of audit files.

A plain hash of a short env value can be reversed by guessing; an HMAC under a key that only
this home holds cannot, yet two reports from the same home still compare equal.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
from pathlib import Path

KEY_BYTES = 32


def audit_dir(home: Path) -> Path:
    return home / "audit"


def home_key(home: Path) -> bytes:
    """The key under `$CORRAL_HOME/audit/key`, made (mode 0600) on first use."""
    path = audit_dir(home) / "key"
    try:
        return path.read_bytes()
    except FileNotFoundError:
        pass
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:  # another process made it first: use theirs
        return path.read_bytes()
    with open(fd, "wb") as handle:
        handle.write(secrets.token_bytes(KEY_BYTES))
        handle.flush()
        os.fsync(handle.fileno())
    return path.read_bytes()


def keyed_hash(key: bytes, name: str, value: str) -> str:
    """A short HMAC of one env variable: shows *that* a value differs, never *what* it is."""
    mac = hmac.new(key, f"{name}\0{value}".encode(), hashlib.sha256)
    return mac.hexdigest()[:16]


def mac(key: bytes, data: bytes) -> str:
    return hmac.new(key, data, hashlib.sha256).hexdigest()
