"""The per-instance record files every driver keeps under $CORRAL_HOME/instances (law 7)."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

from corral.errors import DriverError


def create_instance_dir(inst_dir: Path, name: str, record: dict[str, Any]) -> None:
    """Make the dir appear with its record `name` already in it (staged, then renamed), so
    every instance dir has one: a crash never leaves an instance that nothing describes."""
    staging = inst_dir.with_name(f".{inst_dir.name}.new")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True, mode=0o700)
    write_json(staging / name, record)
    try:
        staging.rename(inst_dir)
    except OSError as exc:
        shutil.rmtree(staging, ignore_errors=True)
        raise DriverError(f"cannot create {inst_dir}: {exc}") from exc


def write_json(path: Path, value: dict[str, Any]) -> None:
    """Write atomically and durably: a reader sees the old file or the whole new one."""
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "w") as f:
        json.dump(value, f, indent=2, sort_keys=True)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
