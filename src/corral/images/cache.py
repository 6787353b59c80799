"""The layer cache: input key → the layer blob those inputs produced.

One small JSON file per key under `cache/layers/`, written atomically, so concurrent bakes
never corrupt a shared index. An entry is only trusted while its blobs exist (the layer with
the recorded size, and for `run` and base layers the blob listing the layer's files);
deleting the whole `cache/` directory is always safe (the next bake rebuilds).
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from corral.images.blobs import BlobStore
from corral.images.digests import canonical_json, hex_of, is_digest


@dataclass(frozen=True)
class CachedLayer:
    digest: str
    size: int
    entries: str | None = None  # blob listing the layer's files, when not known from inputs


class LayerCache:
    def __init__(self, directory: Path, blobs: BlobStore) -> None:
        self.dir = directory / "layers"
        self._blobs = blobs

    def get(self, key: str) -> CachedLayer | None:
        try:
            data = json.loads((self.dir / f"{hex_of(key)}.json").read_bytes())
            entries = data.get("entries")
            layer = CachedLayer(
                digest=str(data["digest"]),
                size=int(data["size"]),
                entries=str(entries) if entries else None,
            )
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            return None  # absent or unreadable: a miss, the layer is rebuilt
        if not is_digest(layer.digest) or not self._blobs.has(layer.digest, layer.size):
            return None
        if layer.entries is not None and not (
            is_digest(layer.entries) and self._blobs.has(layer.entries)
        ):
            return None
        return layer

    def put(self, key: str, layer: CachedLayer) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        record: dict[str, Any] = {"digest": layer.digest, "size": layer.size}
        if layer.entries is not None:
            record["entries"] = layer.entries
        fd, tmp = tempfile.mkstemp(dir=self.dir, prefix=".entry-")
        try:
            with open(fd, "wb") as handle:
                handle.write(canonical_json(record))
            os.replace(tmp, self.dir / f"{hex_of(key)}.json")
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
