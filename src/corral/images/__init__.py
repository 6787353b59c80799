"""The content-addressed image store: recipes → deterministic layers → OCI image layout.

Public surface (everything else in this package is private):

    store = ImageStore(home.images, home.rootfs)
    ref = store.bake("web", spec.images["web"], spec_dir)   # → ImageRef, digest = identity
    store.resolve("web") / store.info(digest) / store.rootfs(digest) / store.file_manifest(digest)

A spec's images (bases pinned by corral.lock, `image:` bases first) bake with
`recipes.bake_images`; channels, revocation, gc and verify are `lifecycle`; sharing bases and
images is `archive` (import, bases export) and `export` (Docker-loadable image export).
"""

from corral.images.model import EPOCH, FileEntry, ImageInfo, ImageRef
from corral.images.store import ImageStore

__all__ = ["EPOCH", "FileEntry", "ImageInfo", "ImageRef", "ImageStore"]
