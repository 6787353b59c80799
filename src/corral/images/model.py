"""The values the image store hands out. Plain frozen dataclasses; no I/O here."""

from __future__ import annotations

import posixpath
from dataclasses import dataclass, field
from typing import Any, Literal

# Every timestamp an image carries (tar mtimes, config `created`) is this constant, so that the
# digest never depends on when or where a bake ran (law 2). 0 is the Unix epoch, the value
# reproducible-build tools (SOURCE_DATE_EPOCH=0, rules_oci) use as well.
EPOCH = 0
EPOCH_ISO = "1970-01-01T00:00:00Z"

# Modes are normalised so that the baking user's umask never reaches the digest.
DIR_MODE = 0o755
EXEC_MODE = 0o755
FILE_MODE = 0o644
LINK_MODE = 0o777

WHITEOUT = ".wh."  # OCI: an empty file `.wh.<name>` in a layer deletes <name> below it

EntryType = Literal["dir", "file", "symlink"]


@dataclass(frozen=True)
class FileEntry:
    """One path of an image's filesystem.

    `path` is relative to the image root ("app/server.py", never with a leading "/") so that
    `rootfs / entry.path` can never point outside the rootfs. `sha256` is the hex digest of a
    regular file's content; `target` is a symlink's target, kept exactly as written.
    """

    path: str
    type: EntryType
    mode: int
    size: int = 0
    sha256: str | None = None
    target: str | None = None
    uid: int = 0
    gid: int = 0

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "path": self.path,
            "type": self.type,
            "mode": self.mode,
            "size": self.size,
            "sha256": self.sha256,
            "target": self.target,
        }
        # Only when set, so manifests (and cache keys) of root-owned files keep their bytes.
        if self.uid or self.gid:
            data |= {"uid": self.uid, "gid": self.gid}
        return data

    @property
    def is_whiteout(self) -> bool:
        """An OCI whiteout (`dir/.wh.name`): the layer deletes `dir/name`."""
        return posixpath.basename(self.path).startswith(WHITEOUT)

    @property
    def whited_out(self) -> str:
        head, tail = posixpath.split(self.path)
        return posixpath.join(head, tail.removeprefix(WHITEOUT))

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> FileEntry:
        return cls(
            path=str(data["path"]),
            type=data["type"],
            mode=int(data["mode"]),
            size=int(data["size"]),
            sha256=data.get("sha256"),
            target=data.get("target"),
            uid=int(data.get("uid", 0)),
            gid=int(data.get("gid", 0)),
        )


@dataclass(frozen=True)
class ImageRef:
    """A name pointing at a baked image. `digest` (the OCI manifest digest) is its identity.

    `created_from` describes the inputs (recipe and, per copy step, the hash of its files); it
    is informational and not part of the digest. `superseded` marks an older digest of the name
    that is kept so releases made from it can still start.
    """

    name: str
    digest: str
    config_digest: str
    size: int  # bytes of the layers
    created_from: dict[str, Any] = field(default_factory=dict)
    superseded: bool = False


@dataclass(frozen=True)
class ImageInfo:
    """What an instance needs to know about an image to run it."""

    digest: str
    config_digest: str
    cmd: list[str]
    env: dict[str, str]
    workdir: str
    layers: list[str]
    size: int
    has_os: bool = False  # the image brings its own /bin/sh and libraries (a busybox base)
    user: str | None = None


@dataclass(frozen=True)
class Parent:
    """What a recipe is layered on: a base's layers and files, and the settings it passes on.

    `label` names the base and its exact content ("busybox@sha256:<deb>", "image:base@sha256:…")
    and is recorded in the image (ancestry: `corral images --stale`)."""

    label: str
    layers: list[dict[str, Any]]  # OCI layer descriptors, lowest first
    files: list[FileEntry]
    has_os: bool
    config: dict[str, Any] = field(default_factory=dict)  # the base's OCI `config` section
    # Debian packages the base holds ({package, version, architecture, sha256}): the SBOM's
    packages: list[dict[str, str]] = field(default_factory=list)
