"""`ImageStore`: recipes → layers → an OCI image layout under `$CORRAL_HOME/images`.

    images/
      oci-layout, index.json      the OCI layout; index.json tags names (see `oci.tag`)
      blobs/sha256/<hex>          layers, configs, manifests, file manifests; immutable
      cache/layers/<key>.json     layer cache: hash of a copy step's inputs → layer blob
      tmp/, corrupt/              blobs being written; blobs that failed their digest check
    rootfs/<hex>                  unpacked images, one per manifest digest (`rootfs()`)

An image's identity is its manifest digest, which depends only on the recipe and the content
of its inputs (law 2). Names are tags: re-baking a name moves it and keeps the older digest
listed (superseded), so releases made from it can still start.
"""

from __future__ import annotations

import builtins
import fcntl
import json
import os
import re
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from corral.errors import StateError, UsageError
from corral.images import oci
from corral.images.blobs import BlobStore
from corral.images.cache import CachedLayer, LayerCache
from corral.images.context import LayerInput, scan_copy
from corral.images.digests import canonical_json, digest_bytes, hex_of, is_digest
from corral.images.filetree import stack
from corral.images.model import FileEntry, ImageInfo, ImageRef, Parent
from corral.images.runstep import run_step
from corral.images.tarball import write_layer
from corral.images.unpack import apply_layer, materialise
from corral.spec.model import ImageSpec

FILES_VERSION = 1
RUN_FORMAT = 1  # bump when a run step's layer changes for the same inputs
# OCI's grammar for `org.opencontainers.image.ref.name`.
_COMPONENT = r"[A-Za-z0-9]+(?:(?:[._:@+-]|--)[A-Za-z0-9]+)*"
_REF_NAME = re.compile(rf"^{_COMPONENT}(?:/{_COMPONENT})*$")


class ImageStore:
    def __init__(
        self,
        root: Path,
        rootfs_root: Path | None = None,
        *,
        architecture: str | None = None,
    ) -> None:
        self.root = root
        self.rootfs_root = rootfs_root if rootfs_root is not None else root.parent / "rootfs"
        # Part of the config, hence of the digest: the same recipe baked on an arm64 and an
        # amd64 host gives two digests, as OCI requires. Pass it to bake for another platform.
        self.architecture = architecture or oci.host_architecture()
        self.blobs = BlobStore(root)
        self._cache = LayerCache(root / "cache", self.blobs)

    # -- baking ---------------------------------------------------------------------------

    def bake(
        self,
        name: str,
        recipe: ImageSpec,
        base_dir: Path,
        *,
        parent: Parent | None = None,
        on_output: Callable[[str], None] | None = None,
        on_step: Callable[[str], None] | None = None,
    ) -> ImageRef:
        """Bake `recipe` (copy sources relative to `base_dir`) on `parent` and tag it `name`.

        Raises MissingFileError when a copy source is absent, BakeError when a file cannot be
        read or changes during the bake, or a `run` step fails. Unchanged inputs reuse their
        cached layers. Nothing is tagged or cached unless the whole bake succeeds.
        """
        _check_name(name)
        step = on_step or (lambda _: None)
        step("hashing inputs")
        inputs = [
            scan_copy(step, base_dir, where=f"images.{name}.copy[{i}]", epoch=recipe.epoch)
            for i, step in enumerate(recipe.copy_)
        ]
        self._init_layout()
        base = parent.layers if parent else []
        fresh: dict[str, CachedLayer] = {}
        layers = base + [self._layer(layer, fresh) for layer in inputs]
        file_layers = [parent.files if parent else [], *(layer.entries for layer in inputs)]
        inherited = parent.config if parent else {}
        env = _inherited_env(inherited) | recipe.env
        workdir = (
            recipe.workdir
            if "workdir" in recipe.model_fields_set
            else str(inherited.get("WorkingDir") or recipe.workdir)
        )
        if recipe.run:
            run_layers, run_files = self._run_steps(
                name, recipe, layers, env, workdir, fresh, on_output, step
            )
            layers += run_layers
            file_layers += run_files
        step("writing the manifest")
        files = stack(file_layers)
        files_digest, _ = self.blobs.put(
            canonical_json({"v": FILES_VERSION, "files": [f.to_json() for f in files]})
        )
        config = oci.image_config(
            architecture=self.architecture,
            env=env,
            cmd=recipe.cmd or list(inherited.get("Cmd") or []),
            workdir=workdir,
            diff_ids=[layer["digest"] for layer in layers],  # uncompressed: diff_id = digest
            entrypoint=recipe.entrypoint or list(inherited.get("Entrypoint") or []),
            user=recipe.user or inherited.get("User"),
            expose=[*_inherited_ports(inherited), *recipe.expose],
            labels=dict(inherited.get("Labels") or {}) | recipe.labels,
            created=_iso(recipe.epoch),
        )
        config_digest, config_size = self.blobs.put(canonical_json(config))
        extra = {}
        if parent is not None:
            extra[oci.BASE] = parent.label
            if parent.has_os:
                extra[oci.HAS_OS] = "true"
        manifest = oci.image_manifest(
            oci.descriptor(oci.CONFIG, config_digest, config_size), layers, files_digest, extra
        )
        digest, manifest_size = self.blobs.put(canonical_json(manifest))
        for key, cached in fresh.items():  # only now: a failed bake leaves the cache as it was
            self._cache.put(key, cached)
        created_from = _created_from(recipe, inputs, layers[len(base) : len(base) + len(inputs)])
        if parent is not None:
            created_from["base"] = parent.label
        entry = oci.descriptor(oci.MANIFEST, digest, manifest_size)
        notes = canonical_json(created_from).decode()
        now = str(int(time.time()))
        self._update_index(lambda index: oci.tag(index, name, entry, notes, now))
        return ImageRef(
            name=name,
            digest=digest,
            config_digest=config_digest,
            size=sum(int(layer["size"]) for layer in layers),
            created_from=created_from,
        )

    def _layer(self, layer: LayerInput, fresh: dict[str, CachedLayer]) -> dict[str, Any]:
        """The layer blob for these inputs: from the cache, or written now."""
        key = layer.key
        cached = fresh.get(key) or self._cache.get(key)
        if cached is None:
            cached = self.write_layer(layer)
            fresh[key] = cached
        return oci.descriptor(oci.LAYER, cached.digest, cached.size)

    def write_layer(self, layer: LayerInput, *, with_entries: bool = False) -> CachedLayer:
        """Write the layer's tar as a blob (and, if asked, the blob listing its files)."""
        with self.blobs.writing() as writer:
            write_layer(layer, writer)
        entries = None
        if with_entries:
            listing = canonical_json([e.to_json() for e in layer.entries])
            entries, _ = self.blobs.put(listing)
        return CachedLayer(digest=writer.digest, size=writer.size, entries=entries)

    def layer_entries(self, cached: CachedLayer) -> builtins.list[FileEntry]:
        """The files of a cached `run` or base layer."""
        if cached.entries is None:
            raise StateError(f"layer {cached.digest} has no recorded file listing")
        return [FileEntry.from_json(item) for item in json.loads(self.blobs.read(cached.entries))]

    def cached(self, key: str) -> CachedLayer | None:
        return self._cache.get(key)

    def remember(self, key: str, layer: CachedLayer) -> None:
        self._cache.put(key, layer)

    def _run_steps(
        self,
        name: str,
        recipe: ImageSpec,
        below: builtins.list[dict[str, Any]],
        env: dict[str, str],
        workdir: str,
        fresh: dict[str, CachedLayer],
        on_output: Callable[[str], None] | None,
        on_step: Callable[[str], None],
    ) -> tuple[builtins.list[dict[str, Any]], builtins.list[builtins.list[FileEntry]]]:
        """Each `run` step's layer: cached by (layers below, step, env, workdir, epoch)."""
        layers = list(below)
        files: builtins.list[builtins.list[FileEntry]] = []
        workspace: Path | None = None
        try:
            for index, step in enumerate(recipe.run):
                key = digest_bytes(
                    canonical_json(
                        {
                            "v": RUN_FORMAT,
                            "below": [layer["digest"] for layer in layers],
                            "run": step,
                            "env": env,
                            "workdir": workdir,
                            "epoch": recipe.epoch,
                            "architecture": self.architecture,
                        }
                    )
                )
                cached = fresh.get(key) or self._cache.get(key)
                if cached is None:
                    on_step(f"run[{index}] {step}")
                    if workspace is None:
                        workspace = self._workspace(layers)
                    result = run_step(
                        workspace,
                        step,
                        env=env,
                        workdir=workdir,
                        epoch=recipe.epoch,
                        where=f"images.{name}.run[{index}]",
                    )
                    if on_output is not None and result.output:
                        on_output(result.output)
                    cached = self.write_layer(result.layer, with_entries=True)
                    fresh[key] = cached
                elif workspace is not None:  # keep the workspace in step with the layers
                    apply_layer(self.blobs, cached.digest, workspace)
                layers.append(oci.descriptor(oci.LAYER, cached.digest, cached.size))
                files.append(self.layer_entries(cached))
        finally:
            if workspace is not None:
                shutil.rmtree(workspace.parent, ignore_errors=True)
        return layers[len(below) :], files

    def _workspace(self, layers: builtins.list[dict[str, Any]]) -> Path:
        """A private, writable unpack of `layers` for `run` steps."""
        (self.root / "tmp").mkdir(parents=True, exist_ok=True)
        holder = Path(tempfile.mkdtemp(dir=self.root / "tmp", prefix="run-"))
        return materialise(self.blobs, [str(layer["digest"]) for layer in layers], holder / "root")

    # -- looking up -----------------------------------------------------------------------

    def resolve(self, ref: str) -> str:
        """A name or "sha256:…" → the manifest digest. Unknown → UsageError naming the known."""
        if ref.startswith("sha256:"):
            hex_of(ref)
            if self.blobs.has(ref):
                return ref
            raise UsageError(
                f"no image {ref} in the image store ({self.root})",
                hint="bake it with `corral bake`; `corral images` lists what is here",
            )
        for name, superseded, digest in self._tags():
            if name == ref and not superseded:
                return digest
        known = sorted({name for name, superseded, _ in self._tags() if not superseded})
        raise UsageError(
            f"no image named {ref!r} in the image store "
            f"(known: {', '.join(known) if known else 'none yet'})",
            hint="bake it with `corral bake`, or use one of the known names",
        )

    def has(self, digest: str) -> bool:
        return is_digest(digest) and self.blobs.has(digest)

    def info(self, digest: str) -> ImageInfo:
        manifest = self._manifest(digest)
        config_digest = str(manifest["config"]["digest"])
        try:
            config = json.loads(self.blobs.read(config_digest))
            run = config.get("config", {})
            env = dict(item.split("=", 1) for item in run.get("Env", []))
            # What runs: the entrypoint followed by cmd (a service's `command` replaces both).
            cmd = [str(arg) for arg in [*(run.get("Entrypoint") or []), *(run.get("Cmd") or [])]]
            workdir = str(run.get("WorkingDir") or "/")
            user = run.get("User")
        except (ValueError, AttributeError, TypeError) as exc:
            raise StateError(f"image config {config_digest} of {digest} is malformed") from exc
        layers = [str(layer["digest"]) for layer in manifest["layers"]]
        notes = manifest.get("annotations") or {}
        return ImageInfo(
            digest=digest,
            config_digest=config_digest,
            cmd=cmd,
            env=env,
            workdir=workdir,
            layers=layers,
            size=sum(int(layer["size"]) for layer in manifest["layers"]),
            has_os=notes.get(oci.HAS_OS) == "true",
            user=str(user) if user else None,
        )

    def as_parent(self, ref: str, label: str) -> Parent:
        """An image of this store as the base of another recipe (`from: image:<name>`)."""
        digest = self.resolve(ref)
        manifest = self._manifest(digest)
        config = json.loads(self.blobs.read(str(manifest["config"]["digest"])))
        return Parent(
            label=f"{label}@{digest}",
            layers=[dict(layer) for layer in manifest["layers"]],
            files=self.file_manifest(digest),
            has_os=(manifest.get("annotations") or {}).get(oci.HAS_OS) == "true",
            config=dict(config.get("config") or {}),
        )

    def base_of(self, digest: str) -> str | None:
        """The base an image was layered on, as recorded in it (ancestry)."""
        notes = self._manifest(digest).get("annotations") or {}
        base = notes.get(oci.BASE)
        return str(base) if base else None

    def index(self) -> dict[str, Any]:
        """index.json as it is now (names, superseded digests, channels, revocations)."""
        return self._index()

    def update_index(self, change: Callable[[dict[str, Any]], dict[str, Any]]) -> None:
        """Read-modify-write index.json under the store's lock."""
        self._init_layout()
        self._update_index(change)

    def tag(self, name: str, digest: str) -> None:
        """Point `name` at an image already in the store (an import)."""
        _check_name(name)
        self._manifest(digest)
        entry = oci.descriptor(oci.MANIFEST, digest, self.blobs.path(digest).stat().st_size)
        notes = canonical_json({"imported": True}).decode()
        now = str(int(time.time()))
        self.update_index(lambda index: oci.tag(index, name, entry, notes, now))

    def write_index(self, index: dict[str, Any]) -> None:
        """Replace index.json; only while holding `locked()`."""
        self._write_atomic(self.root / "index.json", canonical_json(index))

    @contextmanager
    def locked(self) -> Iterator[None]:
        """Hold the index lock (garbage collection holds it so no tag moves meanwhile)."""
        self._init_layout()
        with self._locked():
            yield

    def get(self, ref: str) -> ImageInfo:
        """`info` of a name's current image or of any digest still in the store."""
        return self.info(self.resolve(ref))

    def list(self, *, include_superseded: bool = False) -> builtins.list[ImageRef]:
        """Tagged images, by name; with `include_superseded`, every older digest too."""
        refs: builtins.list[ImageRef] = []
        for entry in self._index().get("manifests", []):
            named = oci.entry_name(entry)
            if named is None or (named[1] and not include_superseded):
                continue
            digest = str(entry["digest"])
            manifest = self._manifest(digest)
            notes = entry.get("annotations", {})
            refs.append(
                ImageRef(
                    name=named[0],
                    digest=digest,
                    config_digest=str(manifest["config"]["digest"]),
                    size=sum(int(layer["size"]) for layer in manifest["layers"]),
                    created_from=json.loads(notes.get(oci.CREATED_FROM) or "{}"),
                    superseded=named[1],
                )
            )
        return sorted(refs, key=lambda ref: (ref.name, ref.superseded))

    def file_manifest(self, digest: str) -> builtins.list[FileEntry]:
        """Every path of the image (relative to its root) with type, mode, size and sha256."""
        manifest = self._manifest(digest)
        files_digest = manifest.get("annotations", {}).get(oci.FILES)
        if not files_digest:
            raise StateError(f"image {digest} has no file manifest: it was not baked by corral")
        data = json.loads(self.blobs.read(files_digest))
        return [FileEntry.from_json(item) for item in data["files"]]

    # -- running --------------------------------------------------------------------------

    def rootfs(self, digest: str) -> Path:
        """The image's files, unpacked once under `<rootfs_root>/<hex>`; use it read-only."""
        final = self.rootfs_root / hex_of(digest)
        if final.is_dir():
            return final
        return materialise(self.blobs, self.info(digest).layers, final)

    # -- internals ------------------------------------------------------------------------

    def _manifest(self, digest: str) -> dict[str, Any]:
        if not self.has(digest):
            hex_of(digest)
            raise UsageError(
                f"no image {digest} in the image store ({self.root})",
                hint="bake it with `corral bake`; `corral images` lists what is here",
            )
        try:
            manifest = json.loads(self.blobs.read(digest))
        except ValueError as exc:
            raise UsageError(f"{digest} is not an image manifest") from exc
        if not isinstance(manifest, dict) or manifest.get("mediaType") != oci.MANIFEST:
            raise UsageError(f"{digest} is not an image manifest")
        return manifest

    def _tags(self) -> Iterator[tuple[str, bool, str]]:
        for entry in self._index().get("manifests", []):
            named = oci.entry_name(entry)
            if named is not None:
                yield named[0], named[1], str(entry["digest"])

    def _index(self) -> dict[str, Any]:
        try:
            data = json.loads((self.root / "index.json").read_bytes())
        except FileNotFoundError:
            return oci.empty_index()
        except ValueError as exc:
            raise StateError(
                f"{self.root / 'index.json'} is not valid JSON",
                hint="restore it from a backup, or remove it and bake the images again",
            ) from exc
        if not isinstance(data, dict):
            raise StateError(f"{self.root / 'index.json'} is not an OCI image index")
        return data

    def _init_layout(self) -> None:
        layout = self.root / "oci-layout"
        if not layout.exists():
            self.root.mkdir(parents=True, exist_ok=True)
            self._write_atomic(layout, canonical_json({"imageLayoutVersion": "1.0.0"}))

    def _update_index(self, change: Callable[[dict[str, Any]], dict[str, Any]]) -> None:
        with self._locked():
            before = self._index()
            after = change(before)
            if after != before or not (self.root / "index.json").exists():
                self._write_atomic(self.root / "index.json", canonical_json(after))

    @contextmanager
    def _locked(self) -> Iterator[None]:
        """Serialise index.json updates between processes (read-modify-write)."""
        with open(self.root / "index.json.lock", "a+b") as handle:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle.fileno(), fcntl.LOCK_UN)

    def _write_atomic(self, path: Path, data: bytes) -> None:
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}-")
        try:
            with open(fd, "wb") as handle:
                handle.write(data)
                handle.flush()
                os.fsync(handle.fileno())
            os.chmod(tmp, 0o644)
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise


def _created_from(
    recipe: ImageSpec, inputs: list[LayerInput], layers: list[dict[str, Any]]
) -> dict[str, Any]:
    """What the image was made from, for people and `corral images`; not part of the digest."""
    return {
        "from": recipe.from_,
        "copy": [
            {
                "src": layer.src,
                "dest": layer.dest,
                "inputs": layer.key,
                "files": len(layer.sources),
                "bytes": layer.content_size,
                "layer": descriptor["digest"],
            }
            for layer, descriptor in zip(inputs, layers, strict=True)
        ],
    }


def _check_name(name: str) -> None:
    if is_digest(name) or name.startswith("sha256:") or not _REF_NAME.match(name):
        raise UsageError(
            f"{name!r} cannot name an image",
            hint="use letters, digits and '.', '_', '-' (the spec's image names always work)",
        )


def _inherited_env(config: dict[str, Any]) -> dict[str, str]:
    return dict(str(item).split("=", 1) for item in config.get("Env") or [] if "=" in item)


def _inherited_ports(config: dict[str, Any]) -> builtins.list[int]:
    return [int(str(port).split("/")[0]) for port in config.get("ExposedPorts") or {}]


def _iso(epoch: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(epoch))
