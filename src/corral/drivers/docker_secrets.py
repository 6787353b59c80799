"""`as: file` secrets for containers (law 5): in memory, never on disk, never in a layer.

A container's own tmpfs cannot be filled before its app starts (`docker cp` does not reach a
tmpfs, and a file written into the container's layer would rest on disk). So, for an engine on
this host, each instance gets a directory on the host's tmpfs (`/dev/shm`: memory), files mode
0400 owned by the image's user, bind-mounted read-only at /run/secrets; it is removed with the
container. An engine on another host cannot see that directory: such a spec is refused with a
hint (Swarm, with its own secret store, is the engine for that).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from corral.drivers.docker_engine import DEFAULT_HOST
from corral.errors import DriverError

SHM = Path("/dev/shm")
MOUNT = "/run/secrets"


def file_secrets(secrets: dict[str, tuple[str, str]]) -> dict[str, str]:
    """name → value of the secrets handed over as files."""
    return {name: value for name, (value, as_) in secrets.items() if as_ == "file"}


def secrets_dir(project: str, environment: str, instance_id: str) -> Path:
    return SHM / f"corral-{project}-{environment}-{instance_id}"


def check_possible(instance_id: str) -> None:
    """Refuse (DriverError) where the files could not stay in memory or reach the engine."""
    host = os.environ.get("DOCKER_HOST") or DEFAULT_HOST
    if not host.startswith("unix://"):
        raise DriverError(
            f"{instance_id}: secrets `as: file` need the Docker engine on this host "
            f"(DOCKER_HOST is {host})",
            hint="Give the secrets `as: env`, run corral on the engine's host, or use the "
            "swarm driver (its own secret store).",
        )
    if not _is_tmpfs(SHM):
        raise DriverError(
            f"{instance_id}: {SHM} is not a tmpfs here, so secret files would rest on disk",
            hint="Mount a tmpfs at /dev/shm, or give the secrets `as: env`.",
        )


def write(directory: Path, files: dict[str, str], user: str | None) -> str:
    """Write each secret to `directory` (0400, owned by the image's numeric user, else root)
    and return the bind that mounts it read-only at /run/secrets."""
    uid = _numeric_uid(user)
    directory.mkdir(mode=0o700)
    try:
        for name, value in sorted(files.items()):
            path = directory / name
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o400)
            try:
                os.write(fd, value.encode())
            finally:
                os.close(fd)
            os.chown(path, uid, -1)
        os.chown(directory, uid, -1)
        directory.chmod(0o500)
    except BaseException:
        remove(directory)
        raise
    return f"{directory}:{MOUNT}:ro"


def remove(directory: Path) -> None:
    shutil.rmtree(directory, ignore_errors=True)


def _numeric_uid(user: str | None) -> int:
    """The uid the app runs as: `1000` or `1000:1000`; a user name (resolved only inside the
    image) keeps root's, which reads the files as their owner."""
    head = (user or "").split(":", 1)[0]
    return int(head) if head.isdigit() else 0


def _is_tmpfs(path: Path) -> bool:
    try:
        mounts = Path("/proc/mounts").read_text().splitlines()
    except OSError:
        return False
    return any(
        len(fields) > 2 and fields[1] == str(path) and fields[2] == "tmpfs"
        for fields in (line.split() for line in mounts)
    )
