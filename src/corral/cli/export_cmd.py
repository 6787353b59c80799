"""`corral export`: a release's objects for another engine, to review or apply by hand.

    corral export kubernetes [SERVICE] [--release rN] [--weights r4=90,r5=10] [-o DIR]

Without --release, the release `apply` would run now (baked, matched to a recorded release
by image digest and config hash, or numbered as the next one). Secret values never appear
(law 5): the output names the Secrets the pods reference.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path
from typing import Annotated

import typer

from corral.agent.runtime import image_store
from corral.cli.common import EnvOption, SpecOption, err
from corral.cli.common import context as _ctx
from corral.drivers.kubernetes_export import release_manifests, render
from corral.drivers.kubernetes_manifests import ClusterSettings, ReleaseSource
from corral.engine import Context, bake_all, desired_services
from corral.errors import UsageError

app = typer.Typer(no_args_is_help=True, help="Write a release's objects for another engine.")

_RELEASE = re.compile(r"^r?(\d+)$")


@app.command("kubernetes")
def kubernetes(
    service: Annotated[str | None, typer.Argument(help="one service (default: all)")] = None,
    release: Annotated[
        str | None, typer.Option("--release", help="a recorded release, like r3 (needs SERVICE)")
    ] = None,
    weights: Annotated[
        str | None,
        typer.Option("--weights", help="HTTPRoute backends, like r4=90,r5=10 (needs SERVICE)"),
    ] = None,
    output: Annotated[
        Path | None, typer.Option("-o", "--output", help="write DIR/SERVICE-rN.yaml files")
    ] = None,
    image_registry: Annotated[
        str | None, typer.Option("--image-registry", help="overrides kubernetes.image_registry")
    ] = None,
    spec: SpecOption = Path("corral.yaml"),
    env: EnvOption = "dev",
) -> None:
    """ReplicaSet, claims, Service and HTTPRoute of a release, as YAML (deterministic)."""
    if (release or weights) and service is None:
        raise UsageError("--release and --weights need a SERVICE", hint="Name the service.")
    ctx = _ctx(spec, env)
    try:
        given = ctx.spec.kubernetes.model_dump() if ctx.spec.kubernetes else {}
        settings = ClusterSettings.from_settings({**given, "image_registry": image_registry})
        if not settings.image_registry:
            raise UsageError(
                "no image registry: the cluster pulls corral's images from one, by digest",
                hint="Set `kubernetes.image_registry` in the spec or pass --image-registry.",
            )
        names = _services(ctx, service)
        texts = [_export(ctx, settings, name, release, weights) for name in names]
    finally:
        ctx.close()
    if output is None:
        sys.stdout.write("\n".join(text for _, text in texts))
        return
    output.mkdir(parents=True, exist_ok=True)
    for filename, text in texts:
        (output / filename).write_text(text)
        err.print(f"wrote {output / filename}")


def _services(ctx: Context, service: str | None) -> list[str]:
    known = sorted(ctx.spec.services)
    if service is None:
        return known
    if service not in known:
        raise UsageError(
            f"no service {service!r} in {ctx.spec_path}", hint=f"Use one of: {', '.join(known)}."
        )
    return [service]


def _number(text: str) -> int:
    found = _RELEASE.match(text.strip())
    if found is None:
        raise UsageError(f"{text!r} is not a release", hint="Write it like r3.")
    return int(found.group(1))


def _recorded(ctx: Context, service: str, number: int) -> ReleaseSource:
    found = ctx.store.get_release(service, number)
    if found is None:
        raise UsageError(
            f"{service} has no release r{number}",
            hint=f"`corral history {service}` lists its releases.",
        )
    return ReleaseSource(
        ctx.project, ctx.environment, service, number, found.image_digest, found.config
    )


def _desired(ctx: Context, service: str) -> tuple[ReleaseSource, bool]:
    """The release apply would run now, and whether it is recorded already."""
    refs = bake_all(ctx)
    wanted = next(d for d in desired_services(ctx, refs) if d.name == service)
    recorded = ctx.store.list_releases(service)
    same = [
        r
        for r in recorded
        if (r.image_digest, r.config_hash) == (wanted.image_digest, wanted.config_hash)
    ]
    number = same[-1].number if same else max((r.number for r in recorded), default=0) + 1
    src = ReleaseSource(
        ctx.project, ctx.environment, service, number, wanted.image_digest, wanted.config
    )
    return src, bool(same)


def _export(
    ctx: Context, settings: ClusterSettings, name: str, release: str | None, weights: str | None
) -> tuple[str, str]:
    if release is not None:
        src, recorded = _recorded(ctx, name, _number(release)), True
    else:
        src, recorded = _desired(ctx, name)
    backends = None
    if weights:
        backends = []
        for part in weights.split(","):
            rel, _, weight = part.partition("=")
            number = _number(rel)
            other = src if number == src.release else _recorded(ctx, name, number)
            if not weight.strip().isdigit():
                raise UsageError(f"{part!r}: a weight is a whole number", hint="Like r4=90,r5=10.")
            backends.append((other, int(weight)))
    service = ctx.spec.services[name]
    docs = release_manifests(
        src,
        settings,
        replicas=service.replicas,
        routed=service.route is not None,
        weights=backends,
        image_user=_image_user(ctx, src.image_digest),
    )
    return f"{name}-r{src.release}.yaml", render(src, docs, recorded)


def _image_user(ctx: Context, digest: str) -> str | None:
    try:
        return image_store(ctx.home).info(digest).user
    except Exception:  # not in this store (an old release's image was collected): unknown
        return None
