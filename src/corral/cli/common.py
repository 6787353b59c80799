"""What every CLI command module shares: consoles, the common options, the command context."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console

from corral.engine import Context
from corral.paths import Home

out = Console(highlight=False, soft_wrap=True)
err = Console(stderr=True, highlight=False, soft_wrap=True)

SpecOption = Annotated[
    Path, typer.Option("--file", "-f", help="the spec file", envvar="CORRAL_SPEC")
]
EnvOption = Annotated[
    str, typer.Option("--env", "-e", help="environment (isolated state)", envvar="CORRAL_ENV")
]
JsonOption = Annotated[bool, typer.Option("--json", help="machine-readable output")]


def context(spec: Path, env: str) -> Context:
    """Where a command works: the spec, $CORRAL_HOME, the environment, $CORRAL_STATE_URL."""
    return Context(
        spec_path=spec,
        home=Home.from_env(),
        environment=env,
        state_url=os.environ.get("CORRAL_STATE_URL"),
    )


def emit_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, indent=2, sort_keys=False) + "\n")
