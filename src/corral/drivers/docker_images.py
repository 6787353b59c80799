"""Put an image of corral's store into a Docker engine: by digest, never from a registry.

The engine names a loaded image by its config digest (see images/export.py), so whether it
already has an image is one lookup. Loaded images are tagged `corral/<project>:<hex[:12]>`
(the manifest digest's hex): recognisable as corral's in `docker images`.
"""

from __future__ import annotations

import tempfile
import threading
import weakref
from typing import Any

from corral.drivers.docker_engine import engine_call, is_not_found
from corral.errors import DriverError
from corral.images.digests import hex_of
from corral.images.export import export_docker_archive
from corral.images.store import ImageStore

# One load at a time per process: two instances of a new release start together.
_LOADING = threading.Lock()
# Per engine client, the (image id, tag) pairs seen loaded and tagged through it: a roll-out's
# later starts skip the lookup and the lock. Keyed by the client object, not its URL: every
# unix-socket engine has the same base_url. `forget_image` drops one the engine turned out to
# lack.
_PRESENT: weakref.WeakKeyDictionary[Any, set[tuple[str, str]]] = weakref.WeakKeyDictionary()


def image_tag(project: str, digest: str) -> str:
    return f"corral/{project}:{hex_of(digest)[:12]}"


def ensure_image(
    api: Any, store: ImageStore, digest: str, project: str, *, remembered: bool = True
) -> str:
    """The engine's image id for manifest `digest`, loading the image first if it lacks it.
    With `remembered`, an image this client loaded or found before is not looked up again
    (a start whose create then says "no such image" calls `forget_image` and retries)."""
    image_id = store.info(digest).config_digest
    tag = image_tag(project, digest)
    present = _PRESENT.setdefault(api, set())
    if remembered and (image_id, tag) in present:
        return image_id
    with _LOADING:
        if _engine_has(api, image_id):
            repo, _, version = tag.partition(":")
            with engine_call(f"tag image {image_id}"):
                api.tag(image_id, repo, version)
            present.add((image_id, tag))
            return image_id
        with tempfile.TemporaryFile(prefix="corral-image-") as archive:
            export_docker_archive(store, digest, archive, tag=tag)
            archive.seek(0)
            with engine_call(f"load image {digest}"):
                for message in api.load_image(archive):
                    if "error" in message:
                        raise DriverError(
                            f"the Docker engine could not load image {digest}: {message['error']}",
                            hint="Bake it again (`corral bake`) and retry; see the "
                            "engine's log for more.",
                        )
        if not _engine_has(api, image_id):
            raise DriverError(
                f"image {digest} was loaded but the engine does not show it as {image_id}",
                hint="The engine may not support OCI layouts with a Docker manifest; "
                "use Docker 20.10 or newer.",
            )
        present.add((image_id, tag))
    return image_id


def forget_image(api: Any, image_id: str) -> None:
    """The engine lacks `image_id` after all (removed by hand): the next ensure looks again."""
    present = _PRESENT.get(api, set())
    for known in [k for k in present if k[0] == image_id]:
        present.discard(known)


def _engine_has(api: Any, image_id: str) -> bool:
    try:
        with engine_call(f"look up image {image_id}"):
            api.inspect_image(image_id)
    except Exception as exc:
        if is_not_found(exc):
            return False
        raise
    return True
