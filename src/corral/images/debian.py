"""`from: debian:<suite>` with `packages:`: a minimal Debian root made by mmdebstrap.

Resolving (the first bake, or `--update-bases`) runs mmdebstrap against the machine's
configured apt mirror with `--variant=essential` plus the recipe's packages, keeps every .deb it
installed in the store (`bases/<sha256>.deb`), and caches the root it made. `corral.lock`
then pins the whole set: each package's name, version, architecture and .deb sha256.

Baking installs exactly the pinned .debs: mmdebstrap runs as it did when resolving
(`--variant=essential --include=<the recipe's packages>`), but against a private flat repository
holding only the pinned .debs, so apt has no other version to choose. The build is reproducible
as mmdebstrap documents it: SOURCE_DATE_EPOCH is the recipe's `epoch` (never the
environment's), its `cleanup/reproducible` step removes logs and caches, and /etc/hostname,
/etc/resolv.conf and the apt sources are written with fixed content. corral then rewrites the
tarball with its own tar writer (mtimes = epoch, devices left out: the sandbox provides /dev),
and caches the layer keyed by the pin and the epoch.

A pinned .deb missing from the store is downloaded again at exactly its version, through a
private apt state on the same mirror, and checked against its sha256. A version the archive no
longer offers is an error naming what to do; a pin is never re-resolved silently.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import shutil
import signal
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from corral.errors import BakeError, PrerequisiteError, UsageError
from corral.images import bases
from corral.images.bases import BasePin
from corral.images.cache import CachedLayer
from corral.images.digests import canonical_json, digest_bytes
from corral.images.model import EPOCH, Parent
from corral.images.store import ImageStore
from corral.images.tarimport import layer_from_tar

DEBIAN_FORMAT = 1  # bump when the layer made from the same pin changes
VARIANT = "essential"  # Essential:yes packages, then the recipe's (mmdebstrap's VARIANTS)
_FIXED_SOURCES = "deb http://deb.debian.org/debian {suite} main\n"  # what the image records
_TIMEOUT = 1200
_SOURCES = (Path("/etc/apt/sources.list"), Path("/etc/apt/sources.list.d"))


@dataclass(frozen=True)
class DebianPin:
    """What `debian:<suite>` + packages resolved to: every installed .deb, exactly."""

    suite: str
    include: tuple[str, ...]  # the recipe's packages, sorted
    packages: tuple[BasePin, ...]  # every .deb installed, sorted by package name
    variant: str = VARIANT

    @property
    def debs(self) -> list[BasePin]:
        return list(self.packages)

    @property
    def sha256(self) -> str:
        """One hash of the whole pinned set: the base's label (`…@sha256:<this>`)."""
        return hashlib.sha256(canonical_json(self.to_json())).hexdigest()

    def to_json(self) -> dict[str, Any]:
        return {
            "suite": self.suite,
            "variant": self.variant,
            "include": list(self.include),
            "packages": [p.to_json() for p in self.packages],
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> DebianPin:
        return cls(
            suite=str(data["suite"]),
            variant=str(data.get("variant", VARIANT)),
            include=tuple(str(p) for p in data.get("include") or []),
            packages=tuple(BasePin.from_json(p) for p in data["packages"]),
        )


def lock_key(suite: str, packages: list[str]) -> str:
    """The recipe's base as corral.lock names it: `debian:bookworm[curl,hello]`."""
    wanted = sorted(set(packages))
    return f"debian:{suite}" + (f"[{','.join(wanted)}]" if wanted else "")


def resolve(store: ImageStore, suite: str, packages: list[str], epoch: int = EPOCH) -> DebianPin:
    """Ask the mirror what `--variant=essential --include=packages` installs; keep the .debs.

    The root made while resolving is byte for byte the one a locked bake makes from the same
    .debs (tests/unit/test_debian_base.py checks it), so it is cached for `epoch` at once: the
    first bake runs mmdebstrap once, not twice."""
    _need_mmdebstrap()
    include = tuple(sorted(set(packages)))
    with tempfile.TemporaryDirectory(dir=bases.tmp_dir(store), prefix="debian-") as work:
        out = Path(work) / "debs"
        keep_debs = [
            "--skip=essential/unlink",
            f"--customize-hook=copy-out /var/cache/apt/archives/ {out}",
        ]
        tarball = _bootstrap(
            Path(work),
            suite,
            include,
            host_mirrors(suite),
            epoch,
            what=f"resolving debian:{suite}",
            extra=keep_debs,
        )
        debs = sorted((out / "archives").glob("*.deb"))
        if not debs:
            raise BakeError(f"mmdebstrap installed no package for debian:{suite}")
        pins = sorted((bases.keep(store, deb, None) for deb in debs), key=lambda p: p.package)
        pin = DebianPin(suite=suite, include=include, packages=tuple(pins))
        store.remember(_cache_key(pin, epoch), _write(store, tarball, Path(work), epoch))
    return pin


def parent(store: ImageStore, key: str, pin: DebianPin, epoch: int) -> Parent:
    """The Debian base layer of `pin`, built once per (pin, epoch) and cached in the store."""
    cached = store.cached(_cache_key(pin, epoch))
    if cached is None:
        cached = _build(store, key, pin, epoch)
        store.remember(_cache_key(pin, epoch), cached)
    label = f"{key}@sha256:{pin.sha256}"
    return bases.os_parent(store, label, cached, [p.to_json() for p in pin.packages])


def _cache_key(pin: DebianPin, epoch: int) -> str:
    return digest_bytes(
        canonical_json({"v": DEBIAN_FORMAT, "base": "debian", "pin": pin.sha256, "epoch": epoch})
    )


def _build(store: ImageStore, key: str, pin: DebianPin, epoch: int) -> CachedLayer:
    _need_mmdebstrap()
    debs = ensure(store, key, pin)
    with tempfile.TemporaryDirectory(dir=bases.tmp_dir(store), prefix="debian-") as work:
        repo = Path(work) / "repo"
        _flat_repository(debs, repo, pin.suite)
        mirror = f"deb [trusted=yes] copy://{repo} ./"
        tarball = _bootstrap(
            Path(work),
            pin.suite,
            pin.include,
            [mirror],
            epoch,
            what=f"building {key}",
            variant=pin.variant,
        )
        return _write(store, tarball, Path(work), epoch)


def _bootstrap(
    work: Path,
    suite: str,
    include: tuple[str, ...],
    mirrors: list[str],
    epoch: int,
    *,
    what: str,
    variant: str = VARIANT,
    extra: list[str] | None = None,
) -> Path:
    """mmdebstrap's root as a tarball (`work/root.tar`), with fixed hostname/resolv/sources."""
    tarball = work / "root.tar"
    hooks = [
        'rm -f "$1/etc/resolv.conf" "$1/etc/hostname"',
        f'mkdir -p "$1/etc/apt" && printf "{_FIXED_SOURCES.format(suite=suite)}"'
        ' > "$1/etc/apt/sources.list"',
    ]
    command = [
        "mmdebstrap",
        f"--variant={variant}",
        "--format=tar",
        *(extra or []),
        *([f"--include={','.join(include)}"] if include else []),
        *(f"--customize-hook={hook}" for hook in hooks),
        suite,
        str(tarball),
        *mirrors,
    ]
    _run(command, work, what=what, epoch=epoch)
    return tarball


def _write(store: ImageStore, tarball: Path, work: Path, epoch: int) -> CachedLayer:
    with open(tarball, "rb") as handle:
        layer = layer_from_tar(handle, work / "files", epoch, src="debian")
    return store.write_layer(layer, with_entries=True)


def ensure(store: ImageStore, key: str, pin: DebianPin) -> list[Path]:
    """Every pinned .deb, from the store or downloaded again at exactly its version."""
    missing = [p for p in pin.packages if not bases.deb_path(store, p).is_file()]
    if missing:
        _fetch(store, key, pin.suite, missing)
    return [bases.deb_path(store, p) for p in pin.packages]


def _fetch(store: ImageStore, key: str, suite: str, missing: list[BasePin]) -> None:
    """Download `missing` through a private apt state on the host's mirror; check each sha256."""
    if shutil.which("apt-get") is None:
        raise PrerequisiteError(
            f"{key}: fetching pinned packages needs apt-get (Debian's package tools)",
            hint="import the bases instead: `corral image import bases.tar`",
        )
    with tempfile.TemporaryDirectory(dir=bases.tmp_dir(store), prefix="apt-") as work:
        root = Path(work)
        for sub in ("lists/partial", "cache/archives/partial", "parts", "debs"):
            (root / sub).mkdir(parents=True)
        (root / "sources.list").write_text("".join(f"{m}\n" for m in host_mirrors(suite)))
        options = [
            f"-oDir::Etc::SourceList={root / 'sources.list'}",
            f"-oDir::Etc::SourceParts={root / 'parts'}",
            f"-oDir::State::Lists={root / 'lists'}",
            f"-oDir::Cache={root / 'cache'}",
            "-oDebug::NoLocking=1",
        ]
        _apt(["apt-get", "-q", *options, "update"], root, key)
        wanted = [f"{p.package}={p.version}" for p in missing]
        done = _apt(["apt-get", "-q", *options, "download", *wanted], root / "debs", key)
        if done is not None:
            shown = [line for line in done.splitlines() if line.startswith("E:")] or [done]
            listed = ", ".join(f"{p.package} {p.version}" for p in missing[:5])
            more = f" and {len(missing) - 5} more" if len(missing) > 5 else ""
            raise UsageError(
                f"{key}: the pinned packages {listed}{more} are not in the image store, and "
                f"the package archive no longer offers them ({'; '.join(shown)[:400]})",
                hint="import them from a colleague or CI (`corral image export --bases` there, "
                "`corral image import bases.tar` here), or re-resolve the bases with "
                "`corral bake --update-bases`",
            )
        by_name = {p.package: p for p in missing}
        for deb in sorted((root / "debs").glob("*.deb")):
            pin = bases.keep(store, deb, None)
            wanted_pin = by_name.get(pin.package)
            if wanted_pin is not None and wanted_pin.sha256 != pin.sha256:
                bases.deb_path(store, pin).unlink(missing_ok=True)
                raise BakeError(
                    f"{key}: the archive's {pin.package} {pin.version} hashes to {pin.sha256}, "
                    f"not to the pinned {wanted_pin.sha256}",
                    hint="someone changed the package under the same version: check the "
                    "archive, then import the pinned .deb or run `corral bake --update-bases`",
                )


def _apt(command: list[str], cwd: Path, key: str) -> str | None:
    """Run apt-get; None when it worked, else its output (for the caller's message)."""
    try:
        done = subprocess.run(
            command, cwd=cwd, capture_output=True, timeout=_TIMEOUT, check=False, env=_env()
        )
    except (OSError, subprocess.SubprocessError) as exc:
        raise BakeError(f"{key}: `{' '.join(command[:2])}` could not run: {exc}") from exc
    if done.returncode == 0:
        return None
    text = (done.stderr or done.stdout).decode(errors="replace").strip()
    if command[-1] == "update" or not re.search(r"not found|Unable to locate", text):
        raise BakeError(f"{key}: `apt-get {command[-1]}` failed: {text[-800:]}")
    return text


def host_mirrors(suite: str) -> list[str]:
    """The machine's configured apt sources for `suite` (and its -updates/-security), as
    one-line entries; Debian's own mirror when none is configured."""
    found: list[str] = []
    for entry in _configured_sources():
        uri, dist, components, options = entry
        if dist == suite or dist.startswith(f"{suite}-") or dist.startswith(f"{suite}/"):
            opts = f" [{options}]" if options else ""
            found.append(f"deb{opts} {uri} {dist} {components}")
    return sorted(set(found)) or [f"deb http://deb.debian.org/debian {suite} main"]


def _configured_sources() -> list[tuple[str, str, str, str]]:
    """(uri, suite, components, options) of every `deb` source in /etc/apt."""
    files: list[Path] = []
    for place in _SOURCES:
        if place.is_file():
            files.append(place)
        elif place.is_dir():
            files += sorted(p for p in place.iterdir() if p.suffix in (".list", ".sources"))
    found: list[tuple[str, str, str, str]] = []
    for path in files:
        try:
            text = path.read_text()
        except OSError:
            continue
        if path.suffix == ".sources":
            found += _deb822(text)
            continue
        for line in text.splitlines():
            match = re.match(r"^\s*deb\s+(\[[^\]]*\]\s+)?(\S+)\s+(\S+)\s*(.*)$", line)
            if match:
                options = (match.group(1) or "").strip().strip("[]").strip()
                found.append((match.group(2), match.group(3), match.group(4).strip(), options))
    return found


def _deb822(text: str) -> list[tuple[str, str, str, str]]:
    found = []
    for stanza in re.split(r"\n\s*\n", text):
        fields: dict[str, str] = {}
        for line in stanza.splitlines():
            if line.startswith("#") or ":" not in line or line[:1].isspace():
                continue
            name, _, value = line.partition(":")
            fields[name.strip().lower()] = value.strip()
        if "deb" not in fields.get("types", "").split() or fields.get("enabled") == "no":
            continue
        signed = fields.get("signed-by", "")
        options = f"signed-by={signed}" if signed.startswith("/") else ""
        for uri in fields.get("uris", "").split():
            for dist in fields.get("suites", "").split():
                found.append((uri, dist, fields.get("components", "main"), options))
    return found


def _flat_repository(debs: list[Path], repo: Path, suite: str) -> None:
    """A `deb [trusted=yes] copy://repo ./` repository serving exactly `debs`; its Release
    names the suite, which is how mmdebstrap finds the essential set in it."""
    repo.mkdir()
    stanzas = []
    for deb in debs:
        name = deb.name
        if _same_fs(deb, repo):
            os.link(deb, repo / name)
        else:
            shutil.copyfile(deb, repo / name)
        control = _control(deb).rstrip("\n")
        size = deb.stat().st_size
        stanzas.append(f"{control}\nFilename: ./{name}\nSize: {size}\nSHA256: {deb.stem}\n")
    (repo / "Packages").write_text("\n".join(stanzas))
    (repo / "Release").write_text(f"Suite: {suite}\nCodename: {suite}\nComponents: main\n")


def _same_fs(a: Path, b: Path) -> bool:
    return a.stat().st_dev == b.stat().st_dev


def _control(deb: Path) -> str:
    try:
        return subprocess.run(
            ["dpkg-deb", "--field", str(deb)], capture_output=True, check=True, timeout=60
        ).stdout.decode()
    except (OSError, subprocess.SubprocessError) as exc:
        raise BakeError(f"{deb.name} is not a readable Debian package: {exc}") from exc


def _run(command: list[str], cwd: Path, *, what: str, epoch: int | None = None) -> None:
    env = _env() | {"TMPDIR": str(cwd)}  # mmdebstrap's chroot: inside our work directory
    if epoch is not None:
        env["SOURCE_DATE_EPOCH"] = str(epoch)  # the recipe's, never the caller's
    if os.geteuid() == 0 and shutil.which("unshare"):
        # As root, mmdebstrap mounts /proc, /sys and /dev/pts in its chroot: in a mount
        # namespace of its own they vanish with it, even when it is killed mid-way.
        command = ["unshare", "--mount", "--propagation", "private", *command]
    process = subprocess.Popen(
        command,
        cwd=cwd,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
        start_new_session=True,
    )
    try:
        _, stderr = process.communicate(timeout=_TIMEOUT)
    except subprocess.TimeoutExpired as exc:
        _kill(process)
        raise BakeError(f"{what}: mmdebstrap did not finish within {_TIMEOUT} s") from exc
    except BaseException:
        _kill(process)
        raise
    if process.returncode != 0:
        text = stderr.decode(errors="replace").strip().splitlines()
        errors = [line for line in text if line.startswith("E:")] or text[-15:]
        shown = [e if len(e) <= 300 else f"{e[:150]} … {e[-150:]}" for e in errors[-15:]]
        raise BakeError(
            f"{what}: mmdebstrap failed:\n" + "\n".join(shown),
            hint="check that the packages exist in the suite and that the mirror answers",
        )


def _kill(process: subprocess.Popen[bytes]) -> None:
    """mmdebstrap and every apt/dpkg it started (its own session)."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    process.wait()


def _env() -> dict[str, str]:
    """A clean environment: nothing ambient (SOURCE_DATE_EPOCH, locale) reaches the build."""
    env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LC_ALL": "C.UTF-8", "HOME": "/root"}
    for name in ("http_proxy", "https_proxy", "no_proxy"):
        if name in os.environ:
            env[name] = os.environ[name]
    return env


def _need_mmdebstrap() -> None:
    if shutil.which("mmdebstrap") is None:
        raise PrerequisiteError(
            "`from: debian:…` needs mmdebstrap, which is not installed",
            hint="install it: apt-get install -y mmdebstrap",
        )
