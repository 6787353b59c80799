"""Where corral keeps its data: everything under `$CORRAL_HOME` (default: the user's data dir)."""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path


def default_home() -> Path:
    configured = os.environ.get("CORRAL_HOME")
    if configured:
        return Path(configured).expanduser().resolve()
    data = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(data) / "corral"


@dataclass(frozen=True)
class Home:
    """The layout of one `$CORRAL_HOME`."""

    root: Path

    @classmethod
    def from_env(cls) -> Home:
        return cls(default_home())

    @property
    def images(self) -> Path:  # OCI image layout (blobs/sha256, index.json)
        return self.root / "images"

    @property
    def rootfs(self) -> Path:  # unpacked image roots, one per manifest digest, read-only use
        return self.root / "rootfs"

    def instances(self, environment: str) -> Path:  # per-instance dirs (pid file, scratch)
        return self.root / "instances" / environment

    def logs(self, environment: str) -> Path:  # per-instance log files
        return self.root / "logs" / environment

    def agent_dir(self, project: str, environment: str) -> Path:
        return self.root / "agent" / project / environment

    def agent_socket(self, project: str, environment: str) -> Path:
        """The agent's API socket; a short path in /tmp when the home is too deep for AF_UNIX."""
        path = self.agent_dir(project, environment) / "api.sock"
        if len(str(path)) <= 100:
            return path
        digest = hashlib.sha256(str(path).encode()).hexdigest()[:16]
        return Path("/tmp") / f"corral-{digest}.sock"

    def agent_log(self, project: str, environment: str) -> Path:
        return self.agent_dir(project, environment) / "agent.log"

    @property
    def state_db(self) -> Path:
        return self.root / "state.db"

    def ensure(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True, mode=0o700)
