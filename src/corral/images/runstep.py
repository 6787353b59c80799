"""`run:` steps: a shell command run inside the image's own root, its changes captured as a layer.

The image so far is unpacked into a private workspace; each step runs there under bubblewrap
(`/bin/sh -c STEP`, no network, umask 022, a clean environment, a private /tmp) and the layer
is what changed: new or modified paths, and a whiteout for each removed one. The comparison
uses a stat snapshot taken before the step, then hashes only what the step touched, so a step
in a large image costs little more than the step itself. Timestamps are never captured: the
tar writer stamps the recipe's epoch on every entry.
"""

from __future__ import annotations

import os
import posixpath
import shutil
import stat
import subprocess
from dataclasses import dataclass
from pathlib import Path

from corral.errors import BakeError, PrerequisiteError
from corral.images.context import LayerInput
from corral.images.digests import hash_file
from corral.images.model import WHITEOUT, FileEntry

# Mount points bwrap provides during a step; their contents are never part of a layer.
_NOT_CAPTURED = frozenset({"proc", "dev", "tmp"})
_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
STEP_TIMEOUT = 1800.0
_SHOWN_OUTPUT = 8000  # characters of a failed step's output kept in the error

Snapshot = dict[str, tuple[int, int, int, int, str | None]]  # mode, size, mtime_ns, ino, link


@dataclass(frozen=True)
class StepResult:
    layer: LayerInput
    output: str


def snapshot(root: Path) -> Snapshot:
    """Every path under `root` (except bwrap's mount points) with what a change would alter."""
    found: Snapshot = {}

    def walk(directory: Path, prefix: str) -> None:
        with os.scandir(directory) as it:
            for child in it:
                path = f"{prefix}{child.name}"
                if not prefix and child.name in _NOT_CAPTURED:
                    continue
                info = child.stat(follow_symlinks=False)
                link = os.readlink(child.path) if stat.S_ISLNK(info.st_mode) else None
                found[path] = (info.st_mode, info.st_size, info.st_mtime_ns, info.st_ino, link)
                if stat.S_ISDIR(info.st_mode):
                    walk(Path(child.path), path + "/")

    walk(root, "")
    return found


def run_step(
    root: Path,
    step: str,
    *,
    env: dict[str, str],
    workdir: str,
    epoch: int,
    where: str,
) -> StepResult:
    """Run `step` in `root` (changed in place) and return the layer of what it changed.

    Raises BakeError with the step's output when it fails."""
    bwrap = shutil.which("bwrap")
    if bwrap is None:
        raise PrerequisiteError(
            f"{where}: `run` steps need bubblewrap (bwrap), which is not installed",
            hint="install it: apt-get install -y bubblewrap",
        )
    if not (root / "bin" / "sh").exists() and not (root / "bin" / "sh").is_symlink():
        raise BakeError(
            f"{where}: the image has no /bin/sh to run the step with",
            hint="bake it `from: busybox` (or from an image that has a shell)",
        )
    for mount in _NOT_CAPTURED:
        (root / mount).mkdir(exist_ok=True)
    before = snapshot(root)
    _make_workdir(root, workdir)  # after the snapshot: a new workdir is part of the layer
    command = [bwrap, "--bind", str(root), "/", "--proc", "/proc", "--dev", "/dev"]
    command += ["--tmpfs", "/tmp", "--unshare-all", "--die-with-parent", "--new-session"]
    command += ["--clearenv", "--setenv", "PATH", _PATH, "--setenv", "HOME", "/root"]
    for key in sorted(env):
        command += ["--setenv", key, env[key]]
    command += ["--chdir", workdir, "/bin/sh", "-c", step]
    try:
        done = subprocess.run(
            command,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            umask=0o022,
            timeout=STEP_TIMEOUT,
            check=False,
        )
    except subprocess.TimeoutExpired as exc:
        raise BakeError(f"{where}: {step!r} did not finish within {STEP_TIMEOUT:.0f} s") from exc
    output = done.stdout.decode("utf-8", "replace")
    if done.returncode != 0:
        shown = output[-_SHOWN_OUTPUT:] or "(no output)\n"
        raise BakeError(
            f"{where}: {step!r} failed with exit status {done.returncode}; its output:\n"
            + shown.rstrip("\n"),
            hint="fix the step; nothing was stored and the layer cache is unchanged",
        )
    return StepResult(layer=_changes(root, before, where, epoch), output=output)


def _changes(root: Path, before: Snapshot, where: str, epoch: int) -> LayerInput:
    after = snapshot(root)
    entries: dict[str, FileEntry] = {}
    sources: dict[str, Path] = {}
    own_ids = os.geteuid() == 0  # as root, owners set by the step (chown) are real
    for path, now in after.items():
        old = before.get(path)
        if old is not None and old[:5] == now[:5] and not stat.S_ISDIR(now[0]):
            continue  # not touched
        mode = now[0]
        same_dir = old is not None and stat.S_ISDIR(mode) and stat.S_ISDIR(old[0])
        if same_dir and old is not None and stat.S_IMODE(old[0]) == stat.S_IMODE(mode):
            continue  # a directory whose listing changed: its children say how
        host = root / path
        info = host.lstat()
        uid, gid = (info.st_uid, info.st_gid) if own_ids else (0, 0)
        if stat.S_ISDIR(mode):
            entry = FileEntry(path, "dir", stat.S_IMODE(mode), uid=uid, gid=gid)
        elif stat.S_ISLNK(mode):
            entry = FileEntry(path, "symlink", 0o777, target=now[4], uid=uid, gid=gid)
        elif stat.S_ISREG(mode):
            sha256, size = hash_file(host)
            entry = FileEntry(
                path, "file", stat.S_IMODE(mode), size=size, sha256=sha256, uid=uid, gid=gid
            )
            sources[path] = host
        else:
            raise BakeError(
                f"{where}: the step left a special file (socket, fifo or device) at /{path}",
                hint="remove it in the same step: images hold files, directories and links",
            )
        entries[path] = entry
    for path in before:
        if path in after or _removed_dirs(before, after, path):
            continue
        head, tail = posixpath.split(path)
        out = posixpath.join(head, WHITEOUT + tail)
        entries[out] = FileEntry(out, "file", 0o644, size=0, sha256=_EMPTY)
    for path in list(entries):  # parents first in the tar, with their real modes
        parent = posixpath.dirname(path)
        while parent and parent not in entries:
            info = (root / parent).lstat()
            entries[parent] = FileEntry(parent, "dir", stat.S_IMODE(info.st_mode))
            parent = posixpath.dirname(parent)
    ordered = [entries[p] for p in sorted(entries)]
    return LayerInput(src="", dest="", entries=ordered, sources=sources, epoch=epoch)


def _make_workdir(root: Path, workdir: str) -> None:
    current = root
    for part in posixpath.normpath("/" + workdir).strip("/").split("/"):
        if not part:
            continue
        current = current / part
        if not current.exists():
            current.mkdir()
            os.chmod(current, 0o755)


def _removed_dirs(before: Snapshot, after: Snapshot, path: str) -> set[str]:
    """The removed ancestors of `path`: one whiteout for the highest one covers them all."""
    removed: set[str] = set()
    parent = posixpath.dirname(path)
    while parent:
        if parent in before and parent not in after:
            removed.add(parent)
        parent = posixpath.dirname(parent)
    return removed


_EMPTY = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
