"""`corral secret`: keep secret values, encrypted, in the environment's state store (law 5).

    corral secret set NAME < value-file      a new version (the value comes from stdin only)
    corral secret ls [--json]                names, versions, when and by whom; never values
    corral secret rm NAME                    every version of NAME

A value is never taken from argv (it would show in `ps` and the shell's history) and never
printed. `set` creates the key file on first use (0600, `$CORRAL_SECRETS_KEY_FILE`, by default
~/.config/corral/secrets.key); back it up: without it the stored secrets cannot be read.
"""

from __future__ import annotations

import getpass
import json
import sys
import time
from pathlib import Path
from typing import Annotated, Any

import typer

from corral.cli.common import EnvOption, SpecOption, out
from corral.cli.common import context as _ctx
from corral.errors import UsageError
from corral.secrets.crypto import create_key
from corral.secrets.store import KEEP_VERSIONS, SecretStore, check_name

app = typer.Typer(no_args_is_help=True, help="Keep secrets encrypted in the state store.")


def _read_value(name: str) -> str:
    if sys.stdin.isatty():
        value = getpass.getpass(f"value of {name} (not echoed): ")
    else:
        value = sys.stdin.read()
        value = value[:-1] if value.endswith("\n") else value  # `echo` adds one
    if not value:
        raise UsageError(
            f"no value for secret {name!r} on stdin",
            hint=f"Pipe it in: `corral secret set {name} < file` (never on the command line).",
        )
    return value


@app.command("set")
def set_(
    name: str,
    spec: SpecOption = Path("corral.yaml"),
    env: EnvOption = "dev",
    keep: Annotated[
        int, typer.Option("--keep", min=1, help="versions kept (older ones are dropped)")
    ] = KEEP_VERSIONS,
) -> None:
    """Store a new version of NAME, read from stdin."""
    check_name(name)
    value = _read_value(name)
    ctx = _ctx(spec, env)
    try:
        key = create_key(home=ctx.home.root)
        who = getpass.getuser()
        version = SecretStore(ctx.store, key).set(name, value, created_by=who, keep=keep)
        ctx.store.append_event(
            "secret.set", f"secret {name} v{version} set", actor=who, data={"name": name}
        )
    finally:
        ctx.close()
    out.print(
        f"{name}: v{version} stored (the last {keep} versions are kept); `corral plan` shows "
        "the services it replaces."
    )


@app.command("ls")
def ls(
    spec: SpecOption = Path("corral.yaml"),
    env: EnvOption = "dev",
    as_json: Annotated[bool, typer.Option("--json", help="machine-readable output")] = False,
) -> None:
    """Secret names and their kept versions; never values."""
    ctx = _ctx(spec, env)
    try:
        stored = ctx.store.list_secrets()
    finally:
        ctx.close()
    names: dict[str, list[dict[str, Any]]] = {}
    for record in stored:
        names.setdefault(record.name, []).append(
            {
                "version": record.version,
                "created_at": record.created_at,
                "created_by": record.created_by,
            }
        )
    rows = [
        {"name": n, "version": v[-1]["version"], "updated_at": v[-1]["created_at"], "versions": v}
        for n, v in names.items()
    ]
    if as_json:
        sys.stdout.write(json.dumps({"secrets": rows}, indent=2) + "\n")
        return
    if not rows:
        out.print(f"No secrets in environment {env!r}; `corral secret set NAME < file` adds one.")
        return
    for row in rows:
        kept = ", ".join(f"v{v['version']}" for v in row["versions"])
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(row["updated_at"]))
        by = row["versions"][-1]["created_by"]
        out.print(f"{row['name']}  v{row['version']}  set {when} by {by}  (kept: {kept})")


@app.command("rm")
def rm(name: str, spec: SpecOption = Path("corral.yaml"), env: EnvOption = "dev") -> None:
    """Delete every version of NAME (releases that use it can no longer start)."""
    ctx = _ctx(spec, env)
    try:
        removed = ctx.store.delete_secret(name)
        if removed:
            ctx.store.append_event(
                "secret.removed",
                f"secret {name} removed ({removed} versions)",
                actor=getpass.getuser(),
                data={"name": name},
            )
    finally:
        ctx.close()
    if not removed:
        raise UsageError(
            f"no secret {name!r} in environment {env!r}", hint="`corral secret ls` lists them."
        )
    out.print(f"{name}: {removed} versions removed.")
