"""The layer cache: input key → the layer blob those inputs produced.

One small JSON file per key under `cache/layers/`, written atomically, so concurrent bakes
never corrupt a shared index. An entry is only trusted while its blob exists with the recorded
size; deleting the whole `cache/` directory is always safe (the next bake rebuilds).
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

from corral.images.blobs import BlobStore
from corral.images.digests import canonical_json, hex_of, is_digest


@dataclass(frozen=True)
class CachedLayer:
    digest: str
    size: int


class LayerCache:
    def __init__(self, directory: Path, blobs: BlobStore) -> None:
        self.dir = directory / "layers"
        self._blobs = blobs

    def get(self, key: str) -> CachedLayer | None:
        try:
            data = json.loads((self.dir / f"{hex_of(key)}.json").read_bytes())
            layer = CachedLayer(digest=str(data["digest"]), size=int(data["size"]))
        except (OSError, ValueError, KeyError, TypeError):
            return None  # absent or unreadable: a miss, the layer is rebuilt
        if not is_digest(layer.digest) or not self._blobs.has(layer.digest, layer.size):
            return None
        return layer

    def put(self, key: str, layer: CachedLayer) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=self.dir, prefix=".entry-")
        try:
            with open(fd, "wb") as handle:
                handle.write(canonical_json({"digest": layer.digest, "size": layer.size}))
            os.replace(tmp, self.dir / f"{hex_of(key)}.json")
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
