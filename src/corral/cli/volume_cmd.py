"""`corral volume`: list and remove named volumes (law 4: state lives outside).

    corral volume ls [--json]          every volume of the project in this environment
    corral volume rm NAME --yes        delete it (and its per-instance copies) for good

Volumes outlive every instance, release and `corral destroy`; `volume rm` is the only way to
delete one, and it refuses while a live instance mounts it.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from corral.cli.common import EnvOption, JsonOption, SpecOption, out
from corral.cli.common import context as _ctx
from corral.engine import Context
from corral.errors import UsageError
from corral.volumes import VolumeInfo, list_local, remove_local, users

app = typer.Typer(
    no_args_is_help=True,
    help="List and remove named volumes (they outlive instances and `destroy`).",
)


def volumes_of(ctx: Context) -> list[VolumeInfo]:
    """The volumes that exist for the project and environment, on the spec's driver."""
    if ctx.spec.driver == "docker":
        from corral.drivers import docker_volumes
        from corral.drivers.docker_engine import connect

        client = connect()
        try:
            return docker_volumes.list_volumes(client.api, ctx.project, ctx.environment)
        finally:
            client.close()
    return list_local(ctx.home, ctx.environment, ctx.project)


def kept_note(ctx: Context) -> str | None:
    """What `corral destroy` says about the volumes it keeps (law 4)."""
    names = sorted({v.name for v in volumes_of(ctx)})
    if not names:
        return None
    return (
        f"Volumes kept: {', '.join(names)} (destroy never deletes data; "
        "`corral volume rm NAME --yes` does)."
    )


@app.command("ls")
def ls(
    spec: SpecOption = Path("corral.yaml"), env: EnvOption = "dev", as_json: JsonOption = False
) -> None:
    """List the volumes, with their size and the live instances that mount them."""
    ctx = _ctx(spec, env)
    try:
        found = volumes_of(ctx)
        used = {name: users(ctx.store, name) for name in {v.name for v in found}}
    finally:
        ctx.close()
    if as_json:
        rows: list[dict[str, Any]] = [{**v.to_json(), "used_by": used[v.name]} for v in found]
        sys.stdout.write(json.dumps({"volumes": rows}, indent=2) + "\n")
        return
    if not found:
        out.print(f"No volumes in {ctx.project}/{ctx.environment}.")
        return
    for v in found:
        size = f"{v.size} bytes" if v.size is not None else "-"
        by = ", ".join(used[v.name]) or "unused"
        out.print(f"{v.label:<24} {size:>14}  {by:<20} {v.location}")


@app.command("rm")
def rm(
    name: Annotated[str, typer.Argument(help="the volume (all its per-instance copies too)")],
    spec: SpecOption = Path("corral.yaml"),
    env: EnvOption = "dev",
    yes: Annotated[bool, typer.Option("--yes", help="yes, delete its data for good")] = False,
) -> None:
    """Delete a volume and its data. Refused while a live instance mounts it."""
    ctx = _ctx(spec, env)
    try:
        found = [v for v in volumes_of(ctx) if v.name == name]
        if not found:
            known = sorted({v.name for v in volumes_of(ctx)})
            raise UsageError(
                f"no volume named {name!r} in {ctx.project}/{ctx.environment}",
                hint=f"volumes: {', '.join(known)}" if known else "there are no volumes",
            )
        using = users(ctx.store, name)
        if using:
            raise UsageError(
                f"volume {name!r} is mounted by live instance(s) {', '.join(using)}",
                hint="destroy the service that uses it first (`corral destroy SERVICE`), "
                "or remove the volume from the spec and apply.",
            )
        if not yes:
            raise UsageError(
                f"deleting volume {name!r} destroys its data for good",
                hint=f"run `corral volume rm {name} --yes` to confirm.",
            )
        if ctx.spec.driver == "docker":
            from corral.drivers import docker_volumes
            from corral.drivers.docker_engine import connect

            client = connect()
            try:
                docker_volumes.remove(client.api, ctx.project, ctx.environment, name)
            finally:
                client.close()
        else:
            remove_local(ctx.home, ctx.environment, ctx.project, name)
    finally:
        ctx.close()
    out.print(f"Volume {name} deleted ({len(found)} cop{'y' if len(found) == 1 else 'ies'}).")
