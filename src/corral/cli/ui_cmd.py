"""`corral ui token create|ls|revoke`: the named tokens that authorise dashboard actions.

The dashboard itself is served by the agent on 127.0.0.1 when it runs with `--ui-port`
(or `CORRAL_UI_PORT`); reads are open there, actions need one of these tokens.
"""

from __future__ import annotations

import json
import sys
import time
from typing import Annotated

import typer

from corral.agent.tokens import TokenStore
from corral.cli.common import JsonOption, err, out
from corral.paths import Home

app = typer.Typer(no_args_is_help=True, help="The agent's web dashboard: tokens for its actions.")
token_app = typer.Typer(no_args_is_help=True, help="Create, list and revoke action tokens.")
app.add_typer(token_app, name="token")


def _tokens() -> TokenStore:
    home = Home.from_env()
    home.ensure()
    return TokenStore.of_home(home.root)


@token_app.command("create")
def create(
    name: Annotated[str, typer.Argument(help="who will use it (recorded in events)")],
) -> None:
    """Create a token and print it, once: only its hash is kept."""
    token = _tokens().create(name)
    sys.stdout.write(token + "\n")
    err.print(f"Token {name!r} created. Store it now: it cannot be shown again.")


@token_app.command("ls")
def ls(as_json: JsonOption = False) -> None:
    """List the tokens (names and creation times, never the tokens)."""
    found = _tokens().list()
    if as_json:
        sys.stdout.write(json.dumps({"tokens": [t.to_json() for t in found]}, indent=2) + "\n")
        return
    if not found:
        out.print("No tokens. Create one with `corral ui token create NAME`.")
        return
    for token in found:
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(token.created_at))
        out.print(f"{token.name:<24} created {when}")


@token_app.command("revoke")
def revoke(name: Annotated[str, typer.Argument(help="the token's name")]) -> None:
    """Revoke a token: the agent refuses it from the next request on."""
    _tokens().revoke(name)
    out.print(f"Token {name!r} revoked.")
