"""`corral audit`: instances against their releases, and the host against its baseline.

    corral audit [SERVICE] [--json] [--full]       (same as `corral audit instances …`)
    corral audit host --init --paths /etc/x …      record the host baseline
    corral audit host [--json] [--full]            compare with it

Exit codes as `aide --check`: 0 clean, 4 drift found; 1 when an instance could not be audited
(never reported as clean).
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from typing import Annotated, Any

import typer
from typer.core import TyperGroup

from corral.audit import AuditStatus, HostAuditor, InstanceFinding, audit_instances, unaudited
from corral.cli.common import EnvOption, JsonOption, SpecOption, out
from corral.engine import Context
from corral.errors import DriftFound, OperationFailed
from corral.paths import Home

_DEFAULT = "instances"


class _DefaultGroup(TyperGroup):
    """`corral audit [SERVICE]` runs `instances` unless a subcommand is named."""

    def parse_args(self, ctx: Any, args: list[str]) -> list[str]:
        if not args or (args[0] not in self.commands and args[0] not in ("--help", "-h")):
            args = [_DEFAULT, *args]
        return super().parse_args(ctx, args)


app = typer.Typer(
    cls=_DefaultGroup,
    help="Prove that instances equal their releases and the host its baseline (exit 4: drift).",
)

FullOption = Annotated[
    bool, typer.Option("--full", help="hash every file, ignoring the stat cache")
]


def _emit_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, indent=2) + "\n")


@app.command(_DEFAULT)
def instances(
    service: Annotated[str | None, typer.Argument(help="only this service")] = None,
    spec: SpecOption = Path("corral.yaml"),
    env: EnvOption = "dev",
    as_json: JsonOption = False,
    full: FullOption = False,
) -> None:
    """Each instance: its files against the image manifest, its process against its release."""
    ctx = Context(
        spec_path=spec,
        home=Home.from_env(),
        environment=env,
        state_url=os.environ.get("CORRAL_STATE_URL"),
    )
    try:
        started = time.monotonic()
        strangers: list[Any] = []
        if ctx.spec.driver == "docker":
            from corral.audit.docker import audit_docker  # the docker SDK is optional

            results, strangers = audit_docker(
                ctx.home, ctx.project, env, ctx.store, service=service, full=full
            )
        elif ctx.spec.driver == "swarm":  # each task through its node's engine
            from corral.audit.swarm import audit_swarm  # the docker SDK is optional

            results = audit_swarm(
                ctx.home,
                ctx.project,
                env,
                ctx.store,
                settings=ctx.spec.driver_settings(),
                service=service,
            )
        elif not unaudited.audits(ctx.spec.driver):  # never "clean" where corral cannot look
            results = unaudited.UnauditedFleet(ctx.spec.driver).audit(ctx.store, service=service)
        else:
            results = audit_instances(
                ctx.home, ctx.project, env, ctx.store, service=service, full=full
            )
        took = time.monotonic() - started
    finally:
        ctx.close()
    counts = {s: sum(r.status is s for r in results) for s in AuditStatus}
    if as_json:
        _emit_json(
            {
                "instances": [r.to_json() for r in results],
                "summary": {str(s): n for s, n in counts.items()},
                "strangers": [s.to_json() for s in strangers],
                "seconds": round(took, 3),
            }
        )
    else:
        _print_instances(results, counts, took)
        for stranger in strangers:  # not corral's: reported, never touched, not drift
            out.print(f"stranger (not started by corral, left alone): {stranger.render()}")
    _exit_for(counts)


def _print_instances(
    results: list[InstanceFinding], counts: dict[AuditStatus, int], took: float
) -> None:
    if not results:
        out.print("No live instance recorded: nothing to audit.")
    shown_roots: set[str] = set()
    for r in results:
        out.print(f"{r.instance_id} ({r.service} r{r.release}): {r.status}")
        if r.node:  # swarm: where its task runs, and the engine that was asked
            engine = f"its engine at {r.engine}" if r.engine else "no engine reached"
            out.print(f"  on node {r.node}: {engine}")
        if r.skipped:
            out.print(f"  skipped: {r.skipped}")
        if r.files and r.rootfs is None:  # a container's own layer (docker)
            out.print("  its own writable layer:")
            for finding in r.files:
                out.print(f"    {finding.render()}")
        elif r.files:
            if r.rootfs in shown_roots:
                out.print(f"  {len(r.files)} file finding(s) in the shared image root (above)")
            else:
                shown_roots.add(r.rootfs or "")
                sharers = ", ".join([r.instance_id, *r.shared_with])
                out.print(f"  image root {r.rootfs} (shared by {sharers}; affects them all):")
                for finding in r.files:
                    out.print(f"    {finding.render()}")
        if r.layer_files:
            out.print(
                f"  image layers {r.layers} (shared by every container of the image; a fresh "
                "one would inherit them):"
            )
            for finding in r.layer_files:
                out.print(f"    {finding.render()}")
        for finding in r.config:
            out.print(f"  {finding.render()}")
        for why in r.not_audited:
            out.print(f"  not audited: {why}")
        for why in r.unchecked:
            out.print(f"  not checked: {why}")
    summary = ", ".join(f"{n} {s}" for s, n in counts.items() if n)
    out.print(f"{summary or 'nothing audited'} ({took:.2f} s)")


def _exit_for(counts: dict[AuditStatus, int]) -> None:
    if counts[AuditStatus.DRIFT]:
        raise DriftFound(
            f"drift found in {counts[AuditStatus.DRIFT]} instance(s)",
            hint="corral replaces tampered and drifted instances (law 8); "
            "look into how the change was made.",
        )
    if counts[AuditStatus.NOT_AUDITED]:
        raise OperationFailed(
            f"{counts[AuditStatus.NOT_AUDITED]} instance(s) could not be audited (see why above)",
            hint="run as the user that runs the instances (or root), on their host.",
        )


@app.command("host")
def host(
    init: Annotated[bool, typer.Option("--init", help="record the baseline of --paths")] = False,
    paths: Annotated[
        list[str] | None, typer.Option("--paths", help="a file or directory to watch")
    ] = None,
    as_json: JsonOption = False,
    full: FullOption = False,
    _spec: Annotated[  # accepted like every command's, unused: the baseline is per home
        Path | None, typer.Option("--file", "-f", hidden=True, envvar="CORRAL_SPEC")
    ] = None,
) -> None:
    """Host drift: record a baseline (--init --paths …), then report what changed since."""
    auditor = HostAuditor(Home.from_env().root)
    if init:
        baseline = auditor.init(paths or [])
        if as_json:
            _emit_json({"paths": list(baseline.paths), "files": len(baseline.files)})
        else:
            out.print(
                f"Recorded the baseline of {len(baseline.files)} path(s) under "
                f"{', '.join(baseline.paths)} in {auditor.baseline_path}."
            )
        return
    if paths:
        raise typer.BadParameter("--paths is only for --init (the baseline names what it watches)")
    report = auditor.check(full=full)
    if as_json:
        _emit_json(report.to_json())
    else:
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(report.baseline_at))
        out.print(f"Host against the baseline of {when} ({report.files} paths watched):")
        for change in report.changes:
            out.print(f"  {change.render()}")
        if not report.changes:
            out.print("  clean: nothing added, removed or changed")
    if report.changes:
        late = sum(c.after_boot for c in report.changes)
        raise DriftFound(
            f"{len(report.changes)} watched path(s) differ from the baseline "
            f"({late} changed after boot)",
            hint="find who changed them; record a new baseline with --init once accepted.",
        )
