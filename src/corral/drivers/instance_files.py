"""The per-instance record files every driver keeps under $CORRAL_HOME/instances (law 7)."""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path
from typing import Any

from corral.drivers.protocol import LaunchSpec
from corral.errors import DriverError
from corral.paths import Home


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


class InstanceRecords:
    """One driver's per-instance records for a (project, environment) (law 7):

        instances/<environment>/<project>/<instance_id>/<name>   the record (JSON)
        logs/<environment>/<project>/<service>/<instance_id>.log  its output, kept by forget

    Only the records decide what a driver owns; a record of another project is not read."""

    def __init__(
        self,
        home: Home,
        project: str,
        environment: str,
        name: str,
        id_pattern: re.Pattern[str],
        *,
        runs: str = "what it names",  # for the hint of an unreadable record
    ) -> None:
        self.root = home.instances(environment) / project
        self.logs_root = home.logs(environment) / project
        self.project = project
        self.name = name
        self.id_pattern = id_pattern
        self.runs = runs

    def dir(self, instance_id: str) -> Path:
        return self.root / instance_id

    def log_file(self, service: str, instance_id: str) -> Path:
        return self.logs_root / service / f"{instance_id}.log"

    def create(self, record: dict[str, Any]) -> None:
        create_instance_dir(self.dir(str(record["instance_id"])), self.name, record)

    def write(self, record: dict[str, Any]) -> None:
        write_json(self.dir(str(record["instance_id"])) / self.name, record)

    def all(self) -> list[dict[str, Any]]:
        if not self.root.is_dir():
            return []
        found = (self.load(entry.name) for entry in sorted(self.root.iterdir()))
        return [record for record in found if record is not None]

    def load(self, instance_id: str) -> dict[str, Any] | None:
        """The record of this project's instance `instance_id`, or None (not ours)."""
        if not self.id_pattern.match(instance_id):
            return None
        path = self.dir(instance_id) / self.name
        try:
            record: dict[str, Any] = json.loads(path.read_text())
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as exc:
            raise DriverError(
                f"{path} cannot be read: {exc}",
                hint=f"Remove {self.runs} by hand if it runs, then that directory.",
            ) from exc
        return record if record.get("project") == self.project else None

    def log_path(self, instance_id: str) -> Path | None:
        """Where an instance's log is, even once its record is forgotten."""
        record = self.load(instance_id)
        if record is not None:
            return self.log_file(str(record["service"]), instance_id)
        if not self.id_pattern.match(instance_id):
            return None
        found = sorted(self.logs_root.glob(f"*/{instance_id}.log"))
        return found[0] if found else None


_OWNER_FIELDS = ("instance_id", "project", "environment", "service", "serial", "release")


def launch_fields(spec: LaunchSpec) -> dict[str, Any]:
    """What every driver's record says first: whose instance it is and what it runs."""
    owner = {name: getattr(spec, name) for name in _OWNER_FIELDS}
    return {**owner, "image_digest": spec.image_digest}


def check_owner(spec: LaunchSpec, project: str, environment: str) -> None:
    """DriverError unless `spec` belongs to this driver's project and environment."""
    if (spec.project, spec.environment) != (project, environment):
        raise DriverError(
            f"{spec.instance_id} belongs to {spec.project}/{spec.environment}, but this "
            f"driver runs {project}/{environment}",
            hint="Start it through the driver of its own project and environment.",
        )


def log_tail(path: Path, lines: int = 15) -> str:
    """The last lines of an instance's log, for an error that says why it failed."""
    try:
        text = path.read_bytes()[-8192:].decode(errors="replace")
    except OSError:
        return "(no log)"
    return "\n".join(text.splitlines()[-lines:]) or "(empty log)"
