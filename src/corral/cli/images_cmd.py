"""`corral images` and `corral image …`: list, promote, revoke, gc, verify, export, import, sbom.

Parse → call `corral.images` → render (human or --json). `images_app` is the listing (a group
that runs its callback), `app` the verbs; cli/app.py registers both. `bake_check` is what
`corral bake --check` runs.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.progress import Progress, SpinnerColumn, TaskID, TextColumn, TimeElapsedColumn

from corral.agent.runtime import image_store, open_store
from corral.cli.common import JsonOption, SpecOption, out
from corral.errors import BakeError, UsageError
from corral.images import lifecycle, sbom
from corral.images.archive import export_bases, import_archive
from corral.images.export import export_docker_archive
from corral.images.lifecycle import ImageEntry
from corral.images.lockfile import lock_path, read_lock
from corral.images.model import ImageRef
from corral.images.recipes import check_reproducible
from corral.paths import Home
from corral.spec.load import load_spec

images_app = typer.Typer(
    invoke_without_command=True, help="List the images in the store (name, digest, channels)."
)
app = typer.Typer(no_args_is_help=True, help="Promote, revoke, collect and share images.")


EnvsOption = Annotated[
    list[str] | None,
    typer.Option("--env", "-e", help="environments whose releases count (default: all three)"),
]
_ENVIRONMENTS = ("dev", "staging", "prod")


def _emit(data: Any) -> None:
    sys.stdout.write(json.dumps(data, indent=2) + "\n")


def _store() -> Any:
    return image_store(Home.from_env())


def releases_using(spec: Path, environments: list[str] | None) -> dict[str, list[str]]:
    """digest → ["dev/web r3", …] for the spec's project; {} when there is no spec here."""
    if not spec.exists():
        return {}
    project = load_spec(spec).project
    home = Home.from_env()
    used: dict[str, list[str]] = {}
    for env in environments or _ENVIRONMENTS:
        store = open_store(home, project, env, os.environ.get("CORRAL_STATE_URL"))
        try:
            for service in store.list_services():
                for release in store.list_releases(service.name):
                    used.setdefault(release.image_digest, []).append(
                        f"{env}/{service.name} {release.name}"
                    )
        finally:
            store.close()
    return used


@images_app.callback()
def list_images(
    ctx: typer.Context,
    as_json: JsonOption = False,
    stale: Annotated[bool, typer.Option("--stale", help="only images whose base moved")] = False,
    spec: SpecOption = Path("corral.yaml"),
    envs: EnvsOption = None,
) -> None:
    """Every image: name, digest, config digest, base, size, age, channels, releases."""
    if ctx.invoked_subcommand is not None:
        return
    used = releases_using(spec, envs)
    found = [
        ImageEntry(**{**e.__dict__, "releases": used.get(e.digest, [])})
        for e in lifecycle.entries(_store(), _pinned(spec))
        if e.stale or not stale
    ]
    if as_json:
        _emit({"images": [e.to_json() for e in found]})
        return
    if not found:
        out.print("no images" + (" with a base that moved" if stale else "") + " in the store")
        return
    rows = [("NAME", "DIGEST", "CONFIG", "BASE", "SIZE", "AGE", "CHANNELS", "RELEASES")]
    for e in found:
        notes = ",".join(e.channels) + (" REVOKED" if e.revoked else "")
        notes += " stale" if e.stale else ""
        rows.append(
            (
                e.name,
                e.digest[:19],
                e.config_digest[:19],
                _base(e.base),
                _size(e.size),
                _age(e.tagged_at),
                notes.strip(),
                ", ".join(e.releases) or "-",
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:  # plain columns: digests are never cut, whatever the terminal's width
        line = "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True))
        out.print(line.rstrip(), markup=False)


@app.command()
def promote(
    ref: Annotated[str, typer.Argument(help="NAME@sha256:…")],
    to: Annotated[str, typer.Option("--to", help="staging or prod")],
) -> None:
    """Move a channel to a digest: dev → staging → prod."""
    name, _, digest = ref.partition("@")
    if not digest:
        raise UsageError(f"{ref!r} names no digest", hint="write NAME@sha256:…")
    lifecycle.promote(_store(), name, digest, to)
    out.print(f"[green]✓[/] {name}@{to} → {digest}")


@app.command()
def revoke(
    digest: Annotated[str, typer.Argument(help="sha256:… of the image")],
    reason: Annotated[str, typer.Option("--reason", help="why it may not be deployed")],
) -> None:
    """Forbid deploying an image: plan and apply refuse it, naming the reason."""
    lifecycle.revoke(_store(), digest, reason)
    out.print(f"[red]revoked[/] {digest}: {reason}")


@app.command()
def gc(
    keep: Annotated[int, typer.Option("--keep", help="newest digests kept per name")] = 3,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="only say what would go")] = False,
    grace: Annotated[
        float, typer.Option("--grace", help="seconds a new unreferenced blob is spared")
    ] = 300.0,
    spec: SpecOption = Path("corral.yaml"),
    envs: EnvsOption = None,
    as_json: JsonOption = False,
) -> None:
    """Remove images no release, channel or the last N per name needs, and their blobs."""
    used = releases_using(spec, envs)
    report = lifecycle.gc(_store(), keep=keep, in_use=used, dry_run=dry_run, grace=grace)
    if as_json:
        _emit(report.to_json())
        return
    verb = "would remove" if dry_run else "removed"
    for name, digest in report.removed_entries:
        out.print(f"{verb} {name}@{digest}")
    out.print(
        f"{verb} {len(report.removed_entries)} image(s), {len(report.removed_blobs)} blob(s), "
        f"{_size(report.freed_bytes)}"
    )


@app.command()
def verify(as_json: JsonOption = False) -> None:
    """Re-hash every blob of the store; corrupt ones are moved aside (exit 1)."""
    report = lifecycle.verify(_store())
    if as_json:
        _emit(report.to_json())
    else:
        for digest in report.corrupt:
            out.print(f"[red]corrupt[/] {digest} (moved aside to corrupt/)")
        for digest in report.missing:
            out.print(f"[red]missing[/] {digest}")
        out.print(f"checked {report.checked} blob(s): " + ("ok" if report.ok else "damaged"))
    if not report.ok:
        raise BakeError(
            "the image store is damaged",
            hint="bake again (`corral bake`) to rewrite what is corrupt or missing",
        )


@app.command("export")
def export(
    ref: Annotated[str | None, typer.Argument(help="image name or sha256:…")] = None,
    output: Annotated[Path, typer.Option("--output", "-o", help="tarball to write")] = Path(
        "image.tar"
    ),
    bases: Annotated[
        bool, typer.Option("--bases", help="export the bases pinned in corral.lock instead")
    ] = False,
    spec: SpecOption = Path("corral.yaml"),
) -> None:
    """Write an image (loadable by `docker load`) or the pinned bases to a tarball."""
    store = _store()
    if bases:
        pins = list(read_lock(lock_path(spec.resolve().parent)).values())
        if not pins:
            raise UsageError(
                f"no bases are pinned beside {spec}", hint="run `corral bake` to pin them"
            )
        export_bases(store, pins, output)
        out.print(f"[green]✓[/] {len(pins)} base(s) → {output}")
        return
    if ref is None:
        raise UsageError("name the image to export", hint="corral image export web -o web.tar")
    digest = store.resolve(ref)
    name = ref if not ref.startswith("sha256:") else "corral-image"
    export_docker_archive(store, digest, output, tag=f"{name}:{digest.split(':')[1][:12]}")
    out.print(f"[green]✓[/] {name} {digest} → {output}")


@app.command("sbom")
def sbom_(ref: Annotated[str, typer.Argument(help="image name or sha256:…")]) -> None:
    """Print an image's bill of materials (CycloneDX JSON): packages, versions, files."""
    store = _store()
    _emit(sbom.read(store, store.resolve(ref)))


@app.command("import")
def import_(
    archive: Annotated[Path, typer.Argument(help="a tarball from `corral image export`")],
    as_json: JsonOption = False,
) -> None:
    """Bring exported bases or images into the store (each blob checked by digest)."""
    result = import_archive(_store(), archive)
    if as_json:
        _emit(result.to_json())
        return
    for pin in result.bases:
        out.print(f"base {pin.package} {pin.version} (sha256 {pin.sha256[:12]}…)")
    for name, digest in result.images:
        out.print(f"image {name} → {digest}")


class BakeProgress:
    """What `corral bake` shows while it bakes: on a terminal a spinner per image naming its
    current step (rich); otherwise one line per baked image; nothing with --json."""

    def __init__(self, console: Console, *, quiet: bool) -> None:
        self._console, self._quiet = console, quiet
        self._live = not quiet and console.is_terminal
        self._progress = Progress(
            SpinnerColumn(finished_text="[green]✓[/]"),
            TextColumn("{task.description}"),
            TimeElapsedColumn(),
            console=console,
            transient=False,
            disable=not self._live,
        )
        self._tasks: dict[str, TaskID] = {}

    def __enter__(self) -> BakeProgress:
        self._progress.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self._progress.__exit__(None, None, None)

    def step(self, name: str, what: str) -> None:
        if not self._live:
            return
        text = f"{name}: {what}"
        if name not in self._tasks:
            self._tasks[name] = self._progress.add_task(text, total=1)
        else:
            self._progress.update(self._tasks[name], description=text)

    def done(self, name: str, ref: ImageRef) -> None:
        text = f"baked image {name} → {ref.digest[:19]}"
        if self._live:
            self.step(name, "")
            self._progress.update(self._tasks[name], description=text, completed=1)
        elif not self._quiet:
            self._console.print(f"[dim]{text}[/]")


def refuse_revoked(target: dict[str, Any], home: Home) -> None:
    """`corral apply PLANFILE`: an image revoked since the plan was saved is refused (exit 2)."""
    store = image_store(home)
    for service in target.get("services", {}).values():
        lifecycle.refuse_revoked(store, str(service["image"]), str(service["image_digest"]))


def bake_check(spec: Path, as_json: bool) -> int:
    """`corral bake --check`: bake twice from scratch, list what differs; exit 1 if anything."""
    loaded = load_spec(spec)
    found = check_reproducible(_store(), loaded.spec.images, loaded.base_dir)
    if as_json:
        _emit(
            {
                "images": [
                    {
                        "name": d.image,
                        "reproducible": d.reproducible,
                        "digests": list(d.digests),
                        "differing_files": d.files,
                    }
                    for d in found
                ]
            }
        )
    else:
        for d in found:
            if d.reproducible:
                out.print(f"[green]✓[/] {d.image}: reproducible ({d.digests[0][:19]})")
                continue
            out.print(
                f"[red]✗[/] {d.image}: two bakes gave {d.digests[0][:19]} and {d.digests[1][:19]}"
            )
            for path in d.files or ["(the files agree: the config or metadata differs)"]:
                out.print(f"    /{path}" if not path.startswith("(") else f"    {path}")
    return 0 if all(d.reproducible for d in found) else 1


def _pinned(spec: Path) -> dict[str, str]:
    """Each base's label as corral.lock beside the spec pins it now (for --stale)."""
    if not spec.exists():
        return {}
    pins = read_lock(lock_path(spec.resolve().parent))
    return {name: f"{name}@sha256:{pin.sha256}" for name, pin in pins.items()}


def _base(base: str | None) -> str:
    if not base:
        return "scratch"
    name, _, digest = base.partition("@")
    return f"{name}@{digest[7:19]}" if digest else name


def _size(size: int) -> str:
    value = float(size)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{size} B"


def _age(tagged_at: int | None) -> str:
    if tagged_at is None:
        return "-"
    seconds = max(0, int(time.time()) - tagged_at)
    for unit, length in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= length:
            return f"{seconds // length}{unit}"
    return f"{seconds}s"
