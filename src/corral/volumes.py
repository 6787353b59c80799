"""Named volumes (law 4: state lives outside): how they are named, found and removed.

A volume belongs to (environment, project, name) and, when `per_instance`, to an instance
serial too, so serial 2 of any release gets serial 2's data (a StatefulSet claim). Volumes are
created by the driver on first mount and outlive every instance and release: nothing but
`corral volume rm NAME --yes` deletes one.

    local:  $CORRAL_HOME/volumes/<environment>/<project>/<volume>[/<serial>]
    docker: named volume corral-<project>-<environment>-<volume>[-<serial>], labelled
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any

from corral.drivers.protocol import Mount
from corral.errors import SpecError, SpecProblem
from corral.images.model import FileEntry
from corral.paths import Home
from corral.secrets.resolve import SECRETS_DIR
from corral.spec.model import RESERVED_MOUNT_PATHS

if TYPE_CHECKING:
    from corral.images.store import ImageStore
    from corral.spec.load import LoadedSpec
    from corral.state.protocol import StateStore


@dataclass(frozen=True)
class VolumeInfo:
    """One volume as it exists on its engine."""

    name: str
    serial: int | None  # None: shared by the service's instances
    location: str  # a directory (local) or a Docker volume name
    size: int | None = None  # bytes, where cheap to know

    @property
    def label(self) -> str:
        return self.name if self.serial is None else f"{self.name}/{self.serial}"

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "serial": self.serial,
            "location": self.location,
            "size": self.size,
        }


def launch_mounts(config: dict[str, Any], serial: int) -> list[Mount]:
    """The mounts of one instance of a release, its `per_instance` volumes resolved to its
    serial (the caller decides; a driver only mounts what it is told)."""
    return [
        Mount(
            name=str(m["name"]),
            path=str(m["path"]),
            serial=serial if m.get("per_instance") else None,
        )
        for m in config.get("mounts") or []
    ]


def handover_timeout(service: Any) -> float | None:
    """How long the route holds requests while a `single_writer` volume changes hands, or
    None when the service has no such volume (then no setting is recorded at all, so the
    settings of services without volumes stay as they were)."""
    if any(v.single_writer for v in service.volumes):
        return float(service.handover_timeout)
    return None


# -- paths the runtime owns, secrets' files and other volumes -----------------------------


def _covers(outer: str, inner: str) -> bool:
    """Whether a mount at `outer` is at or above `inner` (both normalised absolute paths)."""
    return outer == inner or inner.startswith(outer + "/")


def _overlaps(a: str, b: str) -> bool:
    return _covers(a, b) or _covers(b, a)


def mount_clash(service: Any, index: int) -> tuple[str, str] | None:
    """(what is wrong, what to do) when volume `index` of `service` overlaps a path the
    runtime mounts itself, a secret's file, or an earlier volume of the service; else None."""
    volume = service.volumes[index]
    path = volume.path
    elsewhere = "mount the volume at a path of its own, e.g. /data"
    files = sorted(n for n, ref in service.secrets.items() if ref.as_ == "file")
    for name in files:
        secret_file = f"{SECRETS_DIR}/{name}"
        if _overlaps(path, secret_file):
            return (
                f"volume {volume.name!r} at {path} would cover secret {name}, which is "
                f"delivered as the file {secret_file}",
                f"{elsewhere}, or deliver the secret as an env var (`as: env`)",
            )
    for reserved in RESERVED_MOUNT_PATHS:
        if _overlaps(path, reserved):
            owner = "where secrets are delivered" if reserved == SECRETS_DIR else "a runtime mount"
            return (f"volume {volume.name!r} at {path} clashes with {reserved}, {owner}", elsewhere)
    for earlier in service.volumes[:index]:
        if earlier.path == path:
            return (
                f"volumes {earlier.name!r} and {volume.name!r} are both mounted at {path}",
                "give each volume its own path",
            )
        if _overlaps(path, earlier.path):
            outer, inner = (earlier, volume) if _covers(earlier.path, path) else (volume, earlier)
            return (
                f"volume {inner.name!r} at {inner.path} is inside volume {outer.name!r} at "
                f"{outer.path}",
                "mount them side by side (e.g. /data/a and /data/b are fine, /data and "
                "/data/a are not), or use one volume",
            )
    return None


def check_mount_paths(loaded: LoadedSpec) -> None:
    """Raise one SpecError (exit 2) naming file:line with a hint for every volume path that
    overlaps a runtime path, a secret's file or another volume (no image needed: runs at
    validate time)."""
    problems: list[SpecProblem] = []
    for name, service in sorted(loaded.spec.services.items()):
        for index in range(len(service.volumes)):
            clash = mount_clash(service, index)
            if clash is not None:
                problems.append(_path_problem(loaded, name, index, *clash))
    if problems:
        raise SpecError(problems, file=str(loaded.path))


def _path_problem(
    loaded: LoadedSpec, service: str, index: int, message: str, hint: str
) -> SpecProblem:
    """A problem at `services.<service>.volumes[<index>].path`, with its file:line:column."""
    spot = loaded.position(("services", service, "volumes", index, "path"))
    line, column = spot or (None, None)
    return SpecProblem(
        file=str(loaded.path),
        line=line,
        column=column,
        path=f"services.{service}.volumes[{index}].path",
        message=message,
        hint=hint,
    )


# -- image paths ----------------------------------------------------------------------------


def image_clash(path: str, files: Iterable[FileEntry]) -> str | None:
    """Why mounting a volume at `path` conflicts with the image, or None.

    An empty directory of the image at `path` is a fine mount point; a file or symlink there
    or above it is not, nor image files under it (the volume would hide them)."""
    target = PurePosixPath(path.lstrip("/"))
    for entry in files:
        here = PurePosixPath(entry.path.strip("/"))
        if here == target and entry.type != "dir":
            return f"the image has a {entry.type} at {path}"
        if here in target.parents and entry.type != "dir":
            return f"the image has a {entry.type} at /{here}, above {path}"
        if target in here.parents:
            return f"the image has /{here} under {path}, which the volume would hide"
    return None


def check_volume_paths(loaded: LoadedSpec, images: ImageStore, digests: dict[str, str]) -> None:
    """Raise one SpecError (exit 2) naming file:line for every volume path that clashes with
    a path of its service's image (`digests`: service name → image digest)."""
    problems: list[SpecProblem] = []
    for name, service in sorted(loaded.spec.services.items()):
        if not service.volumes or name not in digests:
            continue
        files = images.file_manifest(digests[name])
        for index, volume in enumerate(service.volumes):
            reason = image_clash(volume.path, files)
            if reason is not None:
                problems.append(
                    _path_problem(
                        loaded,
                        name,
                        index,
                        f"volume {volume.name!r} clashes with the image: {reason}",
                        "mount the volume at a path the image does not use (e.g. /data)",
                    )
                )
    if problems:
        raise SpecError(problems, file=str(loaded.path))


# -- local volumes --------------------------------------------------------------------------


def local_root(home: Home, environment: str, project: str) -> Path:
    return home.root / "volumes" / environment / project


def local_dir(home: Home, environment: str, project: str, mount: Mount) -> Path:
    base = local_root(home, environment, project) / mount.name
    return base if mount.serial is None else base / str(mount.serial)


def list_local(home: Home, environment: str, project: str) -> list[VolumeInfo]:
    """Every local volume of the project: a shared one is `<name>/`, the per-instance ones
    are the numbered directories inside it."""
    root = local_root(home, environment, project)
    found: list[VolumeInfo] = []
    if not root.is_dir():
        return found
    for volume in sorted(p for p in root.iterdir() if p.is_dir()):
        serials = sorted(int(p.name) for p in volume.iterdir() if p.is_dir() and p.name.isdigit())
        others = [p for p in volume.iterdir() if not (p.is_dir() and p.name.isdigit())]
        if others or not serials:
            found.append(VolumeInfo(volume.name, None, str(volume), _size(volume)))
        found.extend(
            VolumeInfo(volume.name, s, str(volume / str(s)), _size(volume / str(s)))
            for s in serials
        )
    return found


def remove_local(home: Home, environment: str, project: str, name: str) -> None:
    target = local_root(home, environment, project) / name
    if target.is_dir():
        shutil.rmtree(target)


def _size(path: Path) -> int:
    total = 0
    for dirpath, _dirs, files in os.walk(path):
        for name in files:
            try:
                total += (Path(dirpath) / name).lstat().st_size
            except OSError:
                continue
    return total


# -- users ----------------------------------------------------------------------------------


def users(store: StateStore, name: str) -> list[str]:
    """Live instances (pending, running or stopping) whose release mounts volume `name`."""
    using: list[str] = []
    releases: dict[tuple[str, int], list[str]] = {}
    for record in store.list_instances():
        key = (record.service, record.release)
        if key not in releases:
            release = store.get_release(*key)
            mounts = (release.config.get("mounts") or []) if release else []
            releases[key] = [str(m["name"]) for m in mounts]
        if name in releases[key]:
            using.append(record.id)
    return using
