"""Pinned bases: `from: busybox`, made from Debian's `busybox-static` package.

A base is an input like any file: `corral.lock` (see `lockfile.py`) records the package
version and the .deb's sha256, and the .deb itself is kept in the store under
`bases/<sha256>.deb`. A bake uses the pinned .deb: from the store, else downloaded again with
`apt-get download busybox-static=<version>` and checked against the pinned sha256. A version
the archive no longer offers is an error naming what to do (import it, or `--update-bases`);
corral never re-resolves a pin silently.

The base layer holds /bin/busybox, a symlink per applet (as `busybox --list-full` names
them), the empty mount points /proc, /dev, /tmp, and a minimal /etc/passwd and /etc/group.
"""

from __future__ import annotations

import hashlib
import io
import os
import re
import shutil
import subprocess
import tarfile
import tempfile
from dataclasses import dataclass
from pathlib import Path

from corral.errors import BakeError, PrerequisiteError, UsageError
from corral.images import oci
from corral.images.cache import CachedLayer
from corral.images.context import LayerInput
from corral.images.digests import canonical_json, digest_bytes
from corral.images.model import DIR_MODE, EXEC_MODE, FILE_MODE, LINK_MODE, FileEntry, Parent
from corral.images.store import ImageStore

PACKAGE = "busybox-static"
BASE_FORMAT = 1  # bump when the layer made from the same .deb changes
_ETC = {
    "etc/passwd": b"root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n",
    "etc/group": b"root:x:0:\nnogroup:x:65534:\n",
}
_DIRS = ("bin", "dev", "etc", "proc", "root", "sbin", "tmp", "usr", "usr/bin", "usr/sbin")


@dataclass(frozen=True)
class BasePin:
    """What a base resolved to: enough to fetch exactly the same bytes again."""

    package: str
    version: str
    architecture: str
    sha256: str

    def to_json(self) -> dict[str, str]:
        return {
            "package": self.package,
            "version": self.version,
            "architecture": self.architecture,
            "sha256": self.sha256,
        }

    @property
    def debs(self) -> list[BasePin]:
        """The .debs this pin stands for (the store keeps them under `bases/`)."""
        return [self]

    @classmethod
    def from_json(cls, data: dict[str, str]) -> BasePin:
        return cls(
            package=str(data["package"]),
            version=str(data["version"]),
            architecture=str(data["architecture"]),
            sha256=str(data["sha256"]),
        )


def bases_dir(store: ImageStore) -> Path:
    return store.root / "bases"


def deb_path(store: ImageStore, pin: BasePin) -> Path:
    return bases_dir(store) / f"{pin.sha256}.deb"


def resolve(store: ImageStore) -> BasePin:
    """Ask the archive for the newest busybox-static, keep its .deb in the store, pin it."""
    with tempfile.TemporaryDirectory(dir=tmp_dir(store)) as work:
        deb = _download(PACKAGE, Path(work))
        return keep(store, deb)


def ensure(store: ImageStore, pin: BasePin) -> Path:
    """The pinned .deb, from the store or fetched again at exactly the pinned version."""
    kept = deb_path(store, pin)
    if kept.is_file():
        return kept
    with tempfile.TemporaryDirectory(dir=tmp_dir(store)) as work:
        try:
            deb = _download(f"{pin.package}={pin.version}", Path(work))
        except _NotOffered as exc:
            raise UsageError(
                f"the pinned base {pin.package} {pin.version} (sha256 {pin.sha256[:12]}…) is not "
                f"in the image store, and the package archive no longer offers it ({exc})",
                hint="import it from a colleague or CI (`corral image import bases.tar`), or "
                "re-resolve the bases with `corral bake --update-bases`",
            ) from None
        found = sha256_file(deb)
        if found != pin.sha256:
            raise BakeError(
                f"the archive's {pin.package} {pin.version} hashes to {found}, "
                f"not to the pinned {pin.sha256}",
                hint="someone changed the package under the same version: check the archive, "
                "then import the pinned .deb or run `corral bake --update-bases`",
            )
        keep(store, deb)
    return kept


def import_deb(store: ImageStore, deb: Path) -> BasePin:
    """Put a .deb (from `corral image import`) into the base cache; its pin."""
    return keep(store, deb, None)


def parent(store: ImageStore, pin: BasePin) -> Parent:
    """The busybox base layer of `pin`, cached by the .deb's sha256."""
    key = digest_bytes(canonical_json({"v": BASE_FORMAT, "base": "busybox", "deb": pin.sha256}))
    cached = store.cached(key)
    if cached is None:
        deb = ensure(store, pin)
        with tempfile.TemporaryDirectory(dir=tmp_dir(store)) as work:
            layer = _layer(deb, Path(work))
            cached = store.write_layer(layer, with_entries=True)
        store.remember(key, cached)
    return os_parent(store, f"busybox@sha256:{pin.sha256}", cached, [pin.to_json()])


def os_parent(
    store: ImageStore, label: str, cached: CachedLayer, packages: list[dict[str, str]]
) -> Parent:
    """A base that is one cached layer holding an OS (its own /bin/sh), with its packages."""
    return Parent(
        label=label,
        layers=[oci.descriptor(oci.LAYER, cached.digest, cached.size)],
        files=store.layer_entries(cached),
        has_os=True,
        config={"Env": [f"PATH={_PATH}"], "WorkingDir": "/"},
        packages=packages,
    )


_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


def _layer(deb: Path, work: Path) -> LayerInput:
    binary = work / "busybox"
    binary.write_bytes(_busybox_from(deb))
    os.chmod(binary, 0o755)
    try:
        listing = subprocess.run(
            [str(binary), "--list-full"], capture_output=True, check=True, timeout=30
        ).stdout.decode()
    except (OSError, subprocess.SubprocessError) as exc:
        raise BakeError(f"cannot list the applets of busybox from {deb.name}: {exc}") from exc
    entries = {d: FileEntry(d, "dir", DIR_MODE) for d in _DIRS}
    sha256, size = hashlib.sha256(binary.read_bytes()).hexdigest(), binary.stat().st_size
    entries["bin/busybox"] = FileEntry("bin/busybox", "file", EXEC_MODE, size, sha256)
    sources = {"bin/busybox": binary}
    for applet in sorted(set(listing.split())):
        path = applet.strip("/")
        if path and path != "bin/busybox" and os.path.dirname(path) in entries:
            entries[path] = FileEntry(path, "symlink", LINK_MODE, target="/bin/busybox")
    for path, content in _ETC.items():
        host = work / path.replace("/", "_")
        host.write_bytes(content)
        digest = hashlib.sha256(content).hexdigest()
        entries[path] = FileEntry(path, "file", FILE_MODE, len(content), digest)
        sources[path] = host
    ordered = [entries[p] for p in sorted(entries)]
    return LayerInput(src=deb.name, dest="/", entries=ordered, sources=sources)


def _busybox_from(deb: Path) -> bytes:
    """/bin/busybox out of a .deb (an `ar` archive holding data.tar.*), read in Python."""
    data = deb.read_bytes()
    if not data.startswith(b"!<arch>\n"):
        raise BakeError(f"{deb} is not a Debian package")
    offset = 8
    while offset + 60 <= len(data):
        header = data[offset : offset + 60]
        name = header[:16].decode().strip().rstrip("/")
        size = int(header[48:58].decode().strip())
        body = data[offset + 60 : offset + 60 + size]
        offset += 60 + size + (size % 2)
        if not name.startswith("data.tar"):
            continue
        with tarfile.open(fileobj=io.BytesIO(body), mode="r:*") as tar:
            for member in tar:
                if member.name.lstrip("./") == "bin/busybox" and member.isreg():
                    handle = tar.extractfile(member)
                    assert handle is not None
                    return handle.read()
    raise BakeError(f"{deb} holds no /bin/busybox")


class _NotOffered(Exception):
    pass


def _download(what: str, work: Path) -> Path:
    if shutil.which("apt-get") is None:
        raise PrerequisiteError(
            "resolving the busybox base needs apt-get (Debian's package tools)",
            hint="import the base instead: `corral image import bases.tar`",
        )
    done = subprocess.run(
        ["apt-get", "download", "-q", what],
        cwd=work,
        capture_output=True,
        timeout=300,
        check=False,
    )
    debs = sorted(work.glob("*.deb"))
    if done.returncode != 0 or len(debs) != 1:
        message = done.stderr.decode(errors="replace").strip().splitlines()
        shown = next((m for m in message if m.startswith("E:")), message[-1] if message else "")
        if re.search(r"not found|Unable to locate|has no installation candidate", shown):
            raise _NotOffered(shown)
        raise BakeError(f"`apt-get download {what}` failed: {shown or 'no .deb came back'}")
    return debs[0]


def keep(store: ImageStore, deb: Path, package: str | None = PACKAGE) -> BasePin:
    """Copy `deb` into the store's base cache (if not there yet); its pin. `package`, when
    given, is the package the .deb must hold."""
    try:
        fields = subprocess.run(
            ["dpkg-deb", "--field", str(deb), "Package", "Version", "Architecture"],
            capture_output=True,
            check=True,
            timeout=30,
        ).stdout.decode()
    except (OSError, subprocess.SubprocessError) as exc:
        raise BakeError(f"{deb.name} is not a readable Debian package: {exc}") from exc
    info = dict(line.split(": ", 1) for line in fields.splitlines() if ": " in line)
    if package is not None and info.get("Package") != package:
        raise UsageError(f"{deb.name} is {info.get('Package')!r}, not {package}")
    pin = BasePin(info["Package"], info["Version"], info["Architecture"], sha256_file(deb))
    target = deb_path(store, pin)
    if not target.is_file():
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_suffix(f".{os.getpid()}.part")
        shutil.copyfile(deb, tmp)
        os.chmod(tmp, 0o444)
        os.replace(tmp, target)
    return pin


def sha256_file(path: Path) -> str:
    with open(path, "rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()


def tmp_dir(store: ImageStore) -> Path:
    path = store.root / "tmp"
    path.mkdir(parents=True, exist_ok=True)
    return path
