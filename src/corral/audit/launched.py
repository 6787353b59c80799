"""What a container engine's driver records at start for the auditor to compare with later:
the env a container must run with, by keyed hash (law 5: names and HMACs, never values)."""

from __future__ import annotations

from pathlib import Path

from corral.audit.docker_config import env_marks
from corral.audit.keys import home_key
from corral.drivers.docker_common import instance_env
from corral.drivers.protocol import LaunchSpec
from corral.images.store import ImageStore


def launched_env_marks(images: ImageStore, home: Path, spec: LaunchSpec) -> dict[str, str]:
    """name → keyed hash of every variable of the image and of the instance (the engine merges
    them); secrets by presence only (see docker_config.compare_container)."""
    env = {**images.info(spec.image_digest).env, **instance_env(spec)}
    return env_marks(home_key(home), env, set(spec.secrets))
