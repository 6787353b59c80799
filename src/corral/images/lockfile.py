"""`corral.lock`: what each base of a spec resolved to, committed beside the spec.

    {"bases": {"busybox": {"architecture": …, "package": …, "sha256": …, "version": …},
               "debian:bookworm[hello]": {"suite": "bookworm", "variant": "essential",
                   "include": ["hello"], "packages": [{"package": …, "version": …, …}, …]}},
     "version": 1}

Written only when it changes (sorted keys, two-space indent, a final newline), so a bake with
the same pins leaves the file, and the checkout, untouched.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

from corral.errors import UsageError
from corral.images.bases import BasePin
from corral.images.debian import DebianPin

LOCK_NAME = "corral.lock"
LOCK_VERSION = 1

Pin = BasePin | DebianPin


def lock_path(spec_dir: Path) -> Path:
    return spec_dir / LOCK_NAME


def read_lock(path: Path) -> dict[str, Pin]:
    try:
        data: Any = json.loads(path.read_text())
        if not isinstance(data, dict) or data.get("version") != LOCK_VERSION:
            raise ValueError(f"expected version {LOCK_VERSION}")
        return {str(k): _pin(v) for k, v in dict(data.get("bases") or {}).items()}
    except FileNotFoundError:
        return {}
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise UsageError(
            f"{path} is not a valid corral lock file: {exc}",
            hint="restore it from version control, or delete it and run "
            "`corral bake --update-bases` to pin the bases afresh",
        ) from exc


def _pin(data: dict[str, Any]) -> Pin:
    return DebianPin.from_json(data) if "packages" in data else BasePin.from_json(data)


def write_lock(path: Path, pins: dict[str, Pin]) -> bool:
    """Write the lock if it differs from what is on disk; whether it was written."""
    document = {
        "version": LOCK_VERSION,
        "bases": {name: pins[name].to_json() for name in sorted(pins)},
    }
    text = json.dumps(document, indent=2, sort_keys=True) + "\n"
    try:
        if path.read_text() == text:
            return False
    except FileNotFoundError:
        pass
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}-")
    try:
        with open(fd, "w") as handle:
            handle.write(text)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return True
