"""The `corral` command: parse → call the engine → render (human or JSON). No business logic."""

from __future__ import annotations

import getpass
import json
import os
import shlex
import socket
import sys
import time
from pathlib import Path
from typing import Annotated, Any

import typer

from corral.agent.client import AgentClient
from corral.cli import audit_cmd, export_cmd, images_cmd, secret_cmd, ui_cmd, views, volume_cmd
from corral.cli.common import EnvOption, JsonOption, SpecOption, err, out
from corral.cli.common import context as _ctx
from corral.engine import (
    Context,
    apply_target,
    bake_all,
    destroy_target,
    make_plan,
    rollback_target,
)
from corral.errors import CorralError, UsageError, exit_code_for
from corral.plan.planfile import load_plan, save_plan
from corral.plan.render import render_plan
from corral.spec.schema import json_schema

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    help="corral: bake golden images, plan, and roll fleets forward by replacing instances.",
)
lock_app = typer.Typer(no_args_is_help=True, help="Inspect or release the environment's lock.")
agent_app = typer.Typer(no_args_is_help=True, help="Run the agent that owns this environment.")
rollout_app = typer.Typer(no_args_is_help=True, help="Watch and steer a running roll-out.")
app.add_typer(rollout_app, name="rollout")
app.add_typer(lock_app, name="lock")
app.add_typer(agent_app, name="agent")
app.add_typer(images_cmd.images_app, name="images")
app.add_typer(images_cmd.app, name="image")
app.add_typer(audit_cmd.app, name="audit")
app.add_typer(secret_cmd.app, name="secret")
app.add_typer(ui_cmd.app, name="ui")
app.add_typer(volume_cmd.app, name="volume")
app.add_typer(export_cmd.app, name="export")


def _client(ctx: Context) -> AgentClient:
    spec = ctx.spec
    return AgentClient(ctx.home, ctx.project, ctx.environment, spec.driver, spec.driver_settings())


def _holder(message: str) -> dict[str, Any]:
    return {
        "user": getpass.getuser(),
        "host": socket.gethostname(),
        "pid": os.getpid(),
        "command": "corral " + shlex.join(sys.argv[1:]),
        "message": message,
    }


def _emit_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, indent=2, sort_keys=False) + "\n")


@app.command()
def validate(spec: SpecOption = Path("corral.yaml"), as_json: JsonOption = False) -> None:
    """Check the spec: every problem with its file:line:column and field."""
    ctx = _ctx(spec, "dev")
    loaded = ctx.loaded
    if as_json:
        _emit_json(
            {
                "valid": True,
                "project": loaded.project,
                "images": sorted(loaded.spec.images),
                "services": sorted(loaded.spec.services),
            }
        )
        return
    out.print(
        f"[green]✓[/] {loaded.path} is valid: project {loaded.project}, "
        f"{len(loaded.spec.images)} image(s), {len(loaded.spec.services)} service(s)"
    )


@app.command()
def schema() -> None:
    """Print the JSON Schema of corral.yaml."""
    _emit_json(json_schema())


@app.command()
def bake(
    spec: SpecOption = Path("corral.yaml"),
    as_json: JsonOption = False,
    update_bases: Annotated[
        bool, typer.Option("--update-bases", help="re-resolve the bases pinned in corral.lock")
    ] = False,
    check: Annotated[
        bool, typer.Option("--check", help="bake twice from scratch; list files that differ")
    ] = False,
) -> None:
    """Bake every image of the spec into the content-addressed store."""
    if check:
        raise typer.Exit(images_cmd.bake_check(spec, as_json))
    ctx = _ctx(spec, "dev")
    with images_cmd.BakeProgress(err, quiet=as_json) as shown:  # rich, on a terminal only
        refs = bake_all(ctx, progress=shown.done, on_step=shown.step, update_bases=update_bases)
    if as_json:
        _emit_json({"images": [views.image_json(r) for r in refs.values()]})


@app.command()
def plan(
    spec: SpecOption = Path("corral.yaml"),
    env: EnvOption = "dev",
    out_file: Annotated[
        Path | None, typer.Option("-out", "--out", help="save the plan to apply it later")
    ] = None,
    as_json: JsonOption = False,
) -> None:
    """Show what apply would do: desired vs recorded vs observed."""
    ctx = _ctx(spec, env)
    try:
        refs = bake_all(ctx, progress=None if as_json else views.baked_line(err))
        the_plan = make_plan(ctx, refs)
    finally:
        ctx.close()
    if out_file is not None:
        save_plan(the_plan, out_file)
    if as_json:
        _emit_json(the_plan.to_dict())
        return
    views.print_plan(out, render_plan(the_plan))
    if out_file is not None:
        out.print(f"\nSaved the plan to {out_file}. Apply it with: corral apply {out_file}")


@app.command()
def apply(
    plan_file: Annotated[Path | None, typer.Argument(help="a plan saved with plan -out")] = None,
    spec: SpecOption = Path("corral.yaml"),
    env: EnvOption = "dev",
    message: Annotated[str, typer.Option("--message", "-m", help="why (kept in the lock)")] = "",
    detach: Annotated[bool, typer.Option(help="return once the roll-out has started")] = False,
    wait_bake: Annotated[
        bool, typer.Option(help="wait for the bake window after full promotion")
    ] = True,
) -> None:
    """Apply the spec (or a saved plan): roll every changed service forward."""
    ctx = _ctx(spec, env)
    try:
        if plan_file is not None:
            the_plan = load_plan(plan_file)
            if the_plan.environment != env:
                raise UsageError(
                    f"{plan_file} was made for environment {the_plan.environment!r}, not {env!r}",
                    hint=f"Pass --env {the_plan.environment}, or make a new plan.",
                )
        else:
            refs = bake_all(ctx, progress=views.baked_line(err))
            the_plan = make_plan(ctx, refs)
            views.print_plan(out, render_plan(the_plan))
        if the_plan.is_empty:
            return
        target = apply_target(the_plan)
        if plan_file is not None:
            # a saved plan is only valid against the recorded state it was made from
            target["fingerprint"] = the_plan.state_fingerprint
            images_cmd.refuse_revoked(target, ctx.home)  # revoked since the plan: exit 2
        client = _client(ctx)
        client.ensure(ctx.state)
        accepted = client.request(
            "POST", "/v1/applies", json={"target": target, "holder": _holder(message)}
        )
    finally:
        ctx.close()
    apply_id = accepted["apply_id"]
    if accepted["attached"]:
        err.print(f"Attached to {apply_id}, already applying this change.")
    if detach:
        out.print(f"Started {apply_id}; follow it with `corral status`.")
        return
    code = follow_apply(client, apply_id, wait_bake=wait_bake)
    raise typer.Exit(code)


def follow_apply(client: AgentClient, apply_id: str, *, wait_bake: bool = True) -> int:
    """Print the apply's events until it ends (its exit code), or until it waits for a
    person (exit 0: the roll-out goes on in the agent)."""
    cursor = 0
    while True:
        answer = client.request(
            "GET", f"/v1/applies/{apply_id}", params={"after": cursor, "wait": 5}
        )
        for event in answer["events"]:
            views.print_event(err, event)
            service = event.get("service")
            if event["kind"] == "rollout.awaiting_promotion":
                out.print(
                    f"[yellow]{service}: the roll-out waits for a person.[/] Promote it with "
                    f"`corral rollout promote {service}`, or `corral rollout abort {service}`."
                )
                return 0
            if (
                not wait_bake
                and event["kind"] == "rollout.analysis_started"
                and event["data"].get("phase") == "bake window"
            ):
                out.print(
                    f"{service}: promoted; its bake window goes on in the agent "
                    f"(`corral rollout status {service}`); a failure there still rolls back."
                )
                return 0
        cursor = answer["cursor"]
        status = answer["apply"]["status"]
        if status != "running":
            views.print_apply_result(out, answer["apply"])
            return 0 if status == "succeeded" else 1


@app.command()
def status(
    spec: SpecOption = Path("corral.yaml"), env: EnvOption = "dev", as_json: JsonOption = False
) -> None:
    """The fleet: every service, its release, and each instance's state and health."""
    ctx = _ctx(spec, env)
    try:
        client = _client(ctx)
        if client.is_running():
            data = client.request("GET", "/v1/status")
        else:
            data = views.status_from_store(ctx.store)
    finally:
        ctx.close()
    if as_json:
        _emit_json(views.status_json(data))
    else:
        views.print_status(out, data)


@app.command()
def history(
    service: str,
    spec: SpecOption = Path("corral.yaml"),
    env: EnvOption = "dev",
    as_json: JsonOption = False,
    diff: Annotated[
        tuple[str, str] | None,
        typer.Option("--diff", metavar="rA rB", help="what changed from release rA to rB"),
    ] = None,
) -> None:
    """The releases of a service, oldest first, and which one runs; or the diff of two."""
    from corral.release_diff import diff_of
    from corral.release_history import history_of

    ctx = _ctx(spec, env)
    try:
        changes = diff_of(ctx.store, service, *diff) if diff else None
        history = history_of(ctx.store, service) if changes is None else None
    finally:
        ctx.close()
    if changes is not None and as_json:
        _emit_json(changes.model_dump(mode="json"))
    elif changes is not None:
        views.print_release_diff(out, changes)
    elif history is not None and as_json:  # the API's schema: api_schema.HistoryView
        _emit_json(history.model_dump(mode="json"))
    elif history is not None:
        views.print_history(out, history)


@app.command()
def events(
    spec: SpecOption = Path("corral.yaml"),
    env: EnvOption = "dev",
    service: Annotated[str | None, typer.Option(help="only this service")] = None,
    kind: Annotated[str | None, typer.Option(help="only kinds starting with this")] = None,
    limit: int = 50,
    follow: Annotated[bool, typer.Option("--follow", help="keep printing new events")] = False,
    as_json: JsonOption = False,
) -> None:
    """The append-only trail: applies, starts, stops, replacements, rollbacks, lock changes.

    With --json and --follow: one JSON object per line."""
    ctx = _ctx(spec, env)
    try:
        found = ctx.store.list_events(service=service, limit=100_000)
        found = [e for e in found if not kind or e.kind.startswith(kind)][-limit:]
        rows = [views.event_json(e) for e in found]
        if as_json and not follow:
            _emit_json({"events": rows})
            return
        cursor = found[-1].seq if found else 0
        deadline = time.monotonic() + 24 * 3600
        while True:
            for row in rows:
                if as_json:
                    sys.stdout.write(json.dumps(row) + "\n")
                    sys.stdout.flush()
                else:
                    views.print_event(out, row, with_time=True)
            if not follow or time.monotonic() > deadline:
                return
            time.sleep(0.5)
            new = ctx.store.list_events(service=service, after_seq=cursor, limit=1000)
            if new:
                cursor = new[-1].seq
            rows = [views.event_json(e) for e in new if not kind or e.kind.startswith(kind)]
    finally:
        ctx.close()


@app.command()
def logs(
    service: str,
    spec: Annotated[
        Path, typer.Option("--file", help="the spec file", envvar="CORRAL_SPEC")
    ] = Path("corral.yaml"),
    env: EnvOption = "dev",
    follow: Annotated[bool, typer.Option("--follow", "-f")] = False,
    instance: Annotated[str | None, typer.Option(help="only this instance")] = None,
    release: Annotated[str | None, typer.Option(help="only this release, e.g. r2")] = None,
    grep: Annotated[str | None, typer.Option(help="only lines matching this regex")] = None,
    since: Annotated[
        str | None, typer.Option(help="only lines written since: 10m, 2h or an RFC 3339 time")
    ] = None,
    until: Annotated[str | None, typer.Option(help="only lines written before this")] = None,
    tail: Annotated[
        int | None, typer.Option(help="the last N lines (default 50; all with --since/--until)")
    ] = None,
    field: Annotated[
        list[str] | None,
        typer.Option(help="only JSON lines whose field KEY (a.b: nested) equals VALUE: KEY=VALUE"),
    ] = None,
    as_json: JsonOption = False,
) -> None:
    """Output of a service's instances, also those already replaced, interleaved by time
    (read through the owning agent's API when that agent runs in another home or host)."""
    ctx = _ctx(spec, env)
    try:
        views.print_logs(
            out,
            ctx,
            service,
            instance=instance,
            tail=tail,
            follow=follow,
            release=release,
            grep=grep,
            as_json=as_json,
            since=since,
            until=until,
            fields=field,
        )
    finally:
        ctx.close()


@app.command()
def destroy(
    services: Annotated[list[str] | None, typer.Argument(help="services (default: all)")] = None,
    spec: SpecOption = Path("corral.yaml"),
    env: EnvOption = "dev",
    message: Annotated[str, typer.Option("--message", "-m")] = "",
) -> None:
    """Drain and stop every instance of the services, and forget them."""
    ctx = _ctx(spec, env)
    try:
        target = destroy_target(ctx.store, services)
        if not target["destroy"]:
            out.print(
                "Nothing to destroy: no recorded service"
                + (f" named {', '.join(services)}" if services else "")
                + "."
            )
            return
        client = _client(ctx)
        client.ensure(ctx.state)
        accepted = client.request(
            "POST", "/v1/applies", json={"target": target, "holder": _holder(message)}
        )
    finally:
        ctx.close()
    code = follow_apply(client, accepted["apply_id"])
    kept = volume_cmd.kept_note(ctx)  # law 4: say that the data stays
    if kept:
        out.print(kept)
    raise typer.Exit(code)


def _steer(spec: Path, env: str, service: str, action: str) -> dict[str, Any]:
    ctx = _ctx(spec, env)
    client = _client(ctx)
    if not client.is_running():
        raise UsageError(
            "the agent is not running, so no roll-out is either",
            hint="`corral status` shows the recorded fleet.",
        )
    answer: dict[str, Any] = client.request(
        "POST", f"/v1/rollouts/{service}/{action}", json={"who": getpass.getuser()}
    )
    return answer


@rollout_app.command("status")
def rollout_status(
    service: str,
    spec: SpecOption = Path("corral.yaml"),
    env: EnvOption = "dev",
    watch: Annotated[bool, typer.Option("--watch", "-w", help="follow live")] = False,
    as_json: JsonOption = False,
) -> None:
    """Step, traffic weights, ready counts, per-release error rate and p99."""
    ctx = _ctx(spec, env)
    client = _client(ctx)
    if not client.is_running():
        raise UsageError("the agent is not running", hint="Start it with `corral agent start`.")
    deadline = time.monotonic() + 24 * 3600
    while True:
        data = client.request("GET", f"/v1/rollouts/{service}")
        if as_json:
            _emit_json(views.rollout_json(data))
        else:
            views.print_rollout(out, data)
        if not watch or not data["running"] or time.monotonic() > deadline:
            return
        time.sleep(1.0)


@rollout_app.command("promote")
def rollout_promote(
    service: str, spec: SpecOption = Path("corral.yaml"), env: EnvOption = "dev"
) -> None:
    """End the current pause (or the wait for promotion) and go on."""
    _steer(spec, env, service, "promote")
    out.print(f"{service}: promoted.")


@rollout_app.command("pause")
def rollout_pause(
    service: str, spec: SpecOption = Path("corral.yaml"), env: EnvOption = "dev"
) -> None:
    """Hold the roll-out after its current step (instances are still healed)."""
    _steer(spec, env, service, "pause")
    out.print(f"{service}: paused; `corral rollout resume {service}` goes on.")


@rollout_app.command("resume")
def rollout_resume(
    service: str, spec: SpecOption = Path("corral.yaml"), env: EnvOption = "dev"
) -> None:
    """Go on with a paused roll-out."""
    _steer(spec, env, service, "resume")
    out.print(f"{service}: resumed.")


@rollout_app.command("abort")
def rollout_abort(
    service: str, spec: SpecOption = Path("corral.yaml"), env: EnvOption = "dev"
) -> None:
    """Stop the roll-out and roll back: traffic returns to the old release at once."""
    _steer(spec, env, service, "abort")
    out.print(f"{service}: aborted; rolling back.")


@app.command()
def rollback(
    service: str,
    spec: SpecOption = Path("corral.yaml"),
    env: EnvOption = "dev",
    to: Annotated[str | None, typer.Option("--to", help="release such as r3")] = None,
    message: Annotated[str, typer.Option("--message", "-m")] = "",
) -> None:
    """Go back to the previous release (or --to rN): an abort while a roll-out runs (the old
    set still serves), otherwise a roll-out to that release."""
    ctx = _ctx(spec, env)
    client = _client(ctx)
    try:
        if client.is_running() and to is None:
            view = client.request("GET", f"/v1/rollouts/{service}")
            if view["running"]:
                client.request(
                    "POST", f"/v1/rollouts/{service}/abort", json={"who": getpass.getuser()}
                )
                out.print(f"{service}: roll-out aborted; traffic is back on the old release.")
                raise typer.Exit(follow_apply(client, view["apply_id"]) and 0)
        target = rollback_target(ctx.store, service, to)
        client.ensure(ctx.state)
        accepted = client.request(
            "POST", "/v1/applies", json={"target": target, "holder": _holder(message)}
        )
    finally:
        ctx.close()
    raise typer.Exit(follow_apply(client, accepted["apply_id"]))


@lock_app.command("status")
def lock_status(
    spec: SpecOption = Path("corral.yaml"), env: EnvOption = "dev", as_json: JsonOption = False
) -> None:
    """Who holds the lock, for what, since when."""
    ctx = _ctx(spec, env)
    try:
        lock = ctx.store.get_lock()
    finally:
        ctx.close()
    data = views.lock_json(lock)
    if as_json:
        _emit_json(data)
    else:
        views.print_lock(out, data)


@lock_app.command("release")
def lock_release(
    spec: SpecOption = Path("corral.yaml"),
    env: EnvOption = "dev",
    force: Annotated[bool, typer.Option(help="even if its holder is alive")] = False,
) -> None:
    """Release a lock whose holder died (with --force: any lock)."""
    ctx = _ctx(spec, env)
    try:
        lock = ctx.store.get_lock()
        if lock is None:
            out.print("The lock is free.")
            return
        if not force and views.holder_alive(lock):
            raise UsageError(
                f"the lock is held by a live holder: {lock.describe()}",
                hint="Wait for it, or pass --force if you are sure it is stuck.",
            )
        ctx.store.break_lock()
    finally:
        ctx.close()
    out.print(f"Released the lock held by {lock.describe()}.")


@agent_app.command("start")
def agent_start(spec: SpecOption = Path("corral.yaml"), env: EnvOption = "dev") -> None:
    """Start the agent for this environment (no-op when it runs)."""
    ctx = _ctx(spec, env)
    client = _client(ctx)
    if client.is_running():
        out.print("The agent is already running.")
        return
    pid = client.start(ctx.state)
    out.print(f"Agent started (pid {pid}), API on {client.socket}.")


@agent_app.command("stop")
def agent_stop(spec: SpecOption = Path("corral.yaml"), env: EnvOption = "dev") -> None:
    """Stop the agent. Instances keep running; the next agent adopts them."""
    ctx = _ctx(spec, env)
    client = _client(ctx)
    if not client.is_running():
        out.print("The agent is not running.")
        return
    info = client.request("GET", "/v1/agent")
    client.request("POST", "/v1/agent/stop")
    views.wait_pid_gone(int(info["pid"]), timeout=15.0)
    out.print(f"Agent stopped (pid {info['pid']}); instances keep running.")


@agent_app.command("restart")
def agent_restart(spec: SpecOption = Path("corral.yaml"), env: EnvOption = "dev") -> None:
    """Replace the agent: the new one takes the route sockets over (no connection refused)
    and adopts the running instances."""
    ctx = _ctx(spec, env)
    client = _client(ctx)
    if not client.is_running():
        agent_start(spec, env)
        return
    answer = client.request("POST", "/v1/agent/restart")
    views.wait_pid_gone(int(answer["old_pid"]), timeout=15.0)
    out.print(
        f"Agent restarted: pid {answer['old_pid']} → {answer['new_pid']}; "
        "routes handed over, instances adopted."
    )


@agent_app.command("status")
def agent_status(
    spec: SpecOption = Path("corral.yaml"), env: EnvOption = "dev", as_json: JsonOption = False
) -> None:
    """Whether the agent runs, and where."""
    ctx = _ctx(spec, env)
    client = _client(ctx)
    info = client.request("GET", "/v1/agent") if client.is_running() else None
    if as_json:
        _emit_json({"running": info is not None, "agent": info})
    elif info is None:
        out.print("The agent is not running.")
    else:
        out.print(
            f"Agent {info['agent_id']} (pid {info['pid']}) running since "
            f"{time.strftime('%H:%M:%S', time.localtime(info['started_at']))}; "
            f"routes: {info['routes'] or 'none'}"
        )


def main() -> None:
    try:
        # without standalone mode click returns the code of a typer.Exit instead of exiting
        code = app(standalone_mode=False)
        sys.exit(code if isinstance(code, int) else 0)
    except CorralError as exc:
        views.print_error(err, exc)
        sys.exit(exit_code_for(exc))
    except typer.Exit as exc:
        sys.exit(exc.exit_code)
    except typer.Abort:
        err.print("Aborted.")
        sys.exit(1)
    except KeyboardInterrupt:
        err.print("Interrupted. A roll-out already started goes on in the agent.")
        sys.exit(130)
    except Exception as exc:
        # usage errors of the (vendored) click under typer: shown as click shows them, exit 2
        show = getattr(exc, "show", None)
        if callable(show) and hasattr(exc, "exit_code"):
            show()
            sys.exit(2)
        raise
