"""How the CLI shows things: tables, plan colours, event lines. The engine never prints."""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable
from typing import Any

import psutil
from rich.console import Console
from rich.table import Table
from rich.text import Text

from corral.api_schema import EventView, HistoryView, ReleaseDiff, RolloutView, StatusView
from corral.engine import Context
from corral.errors import CorralError, SpecError
from corral.images.model import ImageRef
from corral.state.protocol import StateStore
from corral.state.records import Event, LockInfo


def short(digest: str | None, length: int = 12) -> str:
    if not digest:
        return "-"
    algo, _, hexpart = digest.partition(":")
    return f"{algo}:{hexpart[:length]}"


def baked_line(console: Console) -> Callable[[str, ImageRef], None]:
    def show(name: str, ref: ImageRef) -> None:
        console.print(f"[dim]baked image {name} → {short(ref.digest)}[/]")

    return show


def image_json(ref: ImageRef) -> dict[str, Any]:
    return {
        "name": ref.name,
        "digest": ref.digest,
        "config_digest": ref.config_digest,
        "size": ref.size,
    }


_PLAN_STYLES = {"+": "green", "-": "red", "~": "yellow", "-/+": "magenta"}


def print_plan(console: Console, text: str) -> None:
    for line in text.splitlines():
        stripped = line.lstrip()
        style = None
        for prefix in ("-/+", "+", "-", "~"):
            if stripped.startswith(prefix + " ") or stripped == prefix:
                style = _PLAN_STYLES[prefix]
                break
        console.print(Text(line, style=style or ""))


def event_json(event: Event) -> dict[str, Any]:
    """The API's EventView (one schema for `events --json` and GET /v1/events)."""
    return EventView.model_validate(event, from_attributes=True).model_dump(mode="json")


def status_json(data: dict[str, Any]) -> dict[str, Any]:
    """`status --json` is the API's StatusView, whether the agent or the state answered."""
    return StatusView.model_validate(data).model_dump(mode="json")


def rollout_json(data: dict[str, Any]) -> dict[str, Any]:
    """`rollout status --json` is the API's RolloutView."""
    return RolloutView.model_validate(data).model_dump(mode="json")


_EVENT_STYLES = {
    "rollout.succeeded": "bold green",
    "rollout.rolled_back": "bold red",
    "rollout.failed": "red",
    "instance.unhealthy": "red",
    "instance.failed": "red",
    "instance.exited": "red",
    "instance.ready": "green",
}


def print_event(console: Console, event: dict[str, Any], *, with_time: bool = False) -> None:
    stamp = time.strftime("%H:%M:%S", time.localtime(event["ts"]))
    style = _EVENT_STYLES.get(event["kind"], "")
    prefix = f"{stamp} " if with_time else f"[dim]{stamp}[/] "
    console.print(
        prefix + f"[{style}]{event['message']}[/]"
        if style
        else prefix + Text(event["message"]).markup
    )


def print_apply_result(console: Console, apply: dict[str, Any]) -> None:
    status = apply["status"]
    result = apply.get("result") or {}
    for name, outcome in sorted(result.items()):
        if name == "error":
            console.print(f"[red]error:[/] {outcome['message']}")
            continue
        served = (
            f"{outcome['requests']} requests through the router during the roll-out, "
            f"{outcome['failed_requests']} failed"
        )
        if outcome.get("release") is None:
            console.print(
                f"[green]{name}: destroyed[/] ({len(outcome.get('stopped', []))} "
                "instance(s) drained and stopped)"
            )
        elif outcome.get("ok"):
            console.print(
                f"[green]{name}: r{outcome['release']} done in "
                f"{outcome['seconds']:.2f}s[/] — {served}"
            )
        else:
            back = (
                f"rolled back to r{outcome['rolled_back_to']}"
                if outcome.get("rolled_back_to")
                else "not rolled forward"
            )
            console.print(
                f"[red]{name}: r{outcome['release']} failed: {outcome['reason']}; "
                f"{back}[/] — {served}"
            )
    colour = "green" if status == "succeeded" else "red"
    console.print(f"[{colour}]Apply {apply['id']} {status}.[/]")


def status_from_store(store: StateStore) -> dict[str, Any]:
    """The status shape without an agent: health is unknown, routes are not served."""
    services = []
    for service in store.list_services():
        release = (
            store.get_release(service.name, service.current_release)
            if service.current_release
            else None
        )
        instances = []
        for record in store.list_instances(service.name):
            rel = store.get_release(service.name, record.release)
            instances.append(
                {
                    "id": record.id,
                    "serial": record.serial,
                    "release": f"r{record.release}",
                    "state": record.state.value,
                    "health": "unknown",
                    "address": record.address,
                    "image": rel.image_digest if rel else None,
                }
            )
        services.append(
            {
                "name": service.name,
                "release": release.name if release else None,
                "desired": service.replicas,
                "ready": 0,
                "route": None,
                "rollout": None,
                "instances": instances,
            }
        )
    return {"services": services, "agent": "not running"}


def print_status(console: Console, data: dict[str, Any]) -> None:
    if not data["services"]:
        console.print("No services recorded in this environment.")
        return
    for service in data["services"]:
        route = service["route"] or "not routed"
        console.print(
            f"[bold]{service['name']}[/]  release {service['release'] or '-'}  "
            f"ready {service['ready']}/{service['desired']}  route {route}"
        )
        if service.get("rollout"):
            r = service["rollout"]
            console.print(f"  [yellow]rolling r{r.get('from_release')} → r{r.get('to_release')}[/]")
        table = Table(box=None, pad_edge=False, show_header=True, header_style="dim")
        for column in ("instance", "serial", "release", "state", "health", "address", "image"):
            table.add_column(column)
        for inst in service["instances"]:
            health = inst["health"]
            colour = {"ready": "green", "dead": "red"}.get(health, "yellow")
            table.add_row(
                inst["id"],
                str(inst["serial"]),
                inst["release"],
                inst["state"],
                f"[{colour}]{health}[/]",
                inst["address"] or "-",
                short(inst["image"]),
            )
        console.print(table)
    for stranger in data.get("strangers") or []:
        console.print(
            f"[yellow]stranger[/] {stranger['name']} {stranger['container'][:12]} "
            f"{stranger['state']}: carries corral's labels, not started by corral; left alone"
        )
    if data.get("agent") == "not running":
        console.print(
            "[dim]The agent is not running: health unknown, routes not served. "
            "Start it with `corral agent start`.[/]"
        )


def print_rollout(console: Console, data: dict[str, Any]) -> None:
    if not data["running"]:
        console.print(f"{data['service']}: no roll-out running.")
    else:
        state = (
            "paused"
            if data.get("paused")
            else ("awaiting promotion" if data.get("awaiting_promotion") else "running")
        )
        weights = ", ".join(f"{k} {v}%" for k, v in (data.get("weights") or {}).items())
        number, steps = data.get("step_number"), data.get("steps")
        at = (
            ("promotion, " if number > steps else f"step {number}/{steps}, ")
            if number is not None and steps is not None
            else ""
        )
        console.print(
            f"[bold]{data['service']}[/] {data.get('strategy')} roll-out {state}: "
            f"{at}{data.get('step')}" + (f"  weights: {weights}" if weights else "")
        )
    table = Table(box=None, header_style="dim")
    for column in ("release", "instances", "ready", "requests", "error rate", "p99 ms"):
        table.add_column(column)
    for label, entry in sorted(data["releases"].items()):
        rate = entry.get("error_rate")
        table.add_row(
            label,
            str(entry.get("instances", 0)),
            str(entry.get("ready", 0)),
            str(entry.get("requests", "-")),
            f"{rate:.2%}" if rate is not None else "-",
            str(entry.get("p99_ms") if entry.get("p99_ms") is not None else "-"),
        )
    console.print(table)
    for window in data.get("analyses") or []:
        colour = {"pass": "green", "fail": "red", "inconclusive": "yellow"}.get(window["result"])
        why = f" — {window['detail']}" if window.get("detail") else ""
        console.print(
            f"  {window['phase']} of {window['release']}: [{colour or 'dim'}]{window['result']}[/]"
            + Text(why).markup
        )
    bake = data.get("bake")
    if bake and bake["result"] == "running":
        left, window = bake["remaining_seconds"], bake["window"]
        console.print(f"  bake window of {bake['release']}: {left:.0f}s left of {window:g}s")


def print_release_diff(console: Console, diff: ReleaseDiff) -> None:
    console.print(f"[bold]{diff.service}[/] {diff.from_release} → {diff.to_release}")
    image = diff.image
    if image.changed:
        console.print(f"  [yellow]~[/] image: {short(image.before)} → {short(image.after)}")
    else:
        console.print(f"  [dim]  image: {short(image.after)} (unchanged)[/]")
    for change in diff.config:
        mark = {"added": "[green]+[/]", "removed": "[red]-[/]", "changed": "[yellow]~[/]"}
        before, after = change.before or "", change.after or ""
        text = {"added": after, "removed": before, "changed": f"{before} → {after}"}
        console.print(f"  {mark[change.change]} {change.key}: " + Text(text[change.change]).markup)
    if not image.changed and not diff.config:
        console.print("  [dim]no differences: the same image and config[/]")


def print_history(console: Console, history: HistoryView) -> None:
    table = Table(title=f"{history.service} releases", box=None, header_style="dim")
    for column in ("", "release", "image", "config", "created", "by", "ended"):
        table.add_column(column)
    for r in history.releases:
        ended = r.ended or ""
        table.add_row(
            "▶" if r.current else "",
            r.release,
            short(r.image_digest),
            short(r.config_hash),
            time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(r.created_at)),
            r.created_by,
            Text(ended, style="green" if ended == "succeeded" else "red" if ended else ""),
        )
    console.print(table)


def print_logs(
    console: Console,
    ctx: Context,
    service: str,
    *,
    instance: str | None,
    tail: int | None,
    follow: bool,
    release: str | None = None,
    grep: str | None = None,
    as_json: bool = False,
    since: str | None = None,
    until: str | None = None,
    fields: list[str] | None = None,
) -> None:
    """Lines of every instance of a service (also replaced ones) interleaved by time, each
    with the time it was written and its stream; filtered by instance, release, time window,
    regex and fields of JSON lines (`--field KEY=VALUE`). `tail` (default 50, all when a window
    is given) counts matching lines across instances. With --json one object per line; a line
    the app wrote as a JSON object carries it as `fields`. When the environment is run by an
    agent of another home or host, its logs are read through that agent's API."""
    from corral.agent.owner import OwnerLogs, foreign_owner
    from corral.agent.runtime import build_driver
    from corral.cli.common import err
    from corral.logs.query import LogQuery, Page, local_page, sources
    from corral.logs.structured import readable

    query = LogQuery.parse(
        service, instance=instance, release=release, grep=grep, since=since, until=until,
        tail=tail, fields=fields or [],
    )  # fmt: skip
    owner = foreign_owner(ctx.store, ctx.home.root)
    remote = OwnerLogs(owner) if owner is not None else None
    driver = None if remote is not None else build_driver(
        ctx.home, ctx.project, ctx.environment, ctx.spec.driver, ctx.spec.driver_settings()
    )  # fmt: skip

    def read(cursor: str | None) -> Page:
        if remote is not None:
            return remote.read(query, cursor)
        assert driver is not None
        return local_page(ctx.store, driver, query, cursor)

    def show(page: Page) -> None:
        if page.omitted:
            err.print(f"({page.omitted} older matching lines left out: narrow the query)")
        for row in page.records:
            if as_json:
                sys.stdout.write(json.dumps(row) + "\n")
                continue
            head = f"{row['time'] or '-'} {row['instance']} {row['release']} "
            text = readable(row["fields"]) if row["fields"] is not None else row["line"]
            style = "red" if row["stream"] == "stderr" else ""
            console.print(Text(head + "| ", style="dim") + Text(text, style=style))
        sys.stdout.flush()

    if (
        driver is not None
        and not sources(ctx.store, driver, service)
        and ctx.store.list_instances(service, include_gone=True)  # they ran in another home
    ):
        err.print(
            f"No log of {service} is on this host under {ctx.home.root}, and no agent is "
            "recorded for this environment: its logs are where its agent ran."
        )
    try:
        page = read(None)
        show(page)
        deadline = time.monotonic() + 24 * 3600
        while follow and time.monotonic() < deadline:
            time.sleep(0.5)
            page = read(page.cursor)
            show(page)
    finally:
        if remote is not None:
            remote.close()


def lock_json(lock: LockInfo | None) -> dict[str, Any]:
    if lock is None:
        return {"locked": False}
    return {
        "locked": True,
        "holder": lock.describe(),
        "user": lock.user,
        "host": lock.host,
        "pid": lock.pid,
        "command": lock.command,
        "message": lock.message,
        "operation": lock.operation,
        "since": lock.since,
        "expires_at": lock.expires_at,
        "expired": lock.expires_at < time.time(),
    }


def print_lock(console: Console, data: dict[str, Any]) -> None:
    if not data["locked"]:
        console.print("The lock is free.")
        return
    since = time.strftime("%H:%M:%S", time.localtime(data["since"]))
    state = "expired lease" if data["expired"] else "live lease"
    console.print(
        f"Locked by {data['holder']} for {data['operation'] or 'a change'} since {since} ({state})."
    )


def holder_alive(lock: LockInfo) -> bool:
    import socket

    if lock.expires_at < time.time():
        return False
    if lock.host != socket.gethostname():
        return True
    try:
        return psutil.Process(lock.pid).status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def wait_pid_gone(pid: int, *, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if psutil.Process(pid).status() == psutil.STATUS_ZOMBIE:
                return
        except psutil.Error:
            return
        time.sleep(0.05)


def print_error(console: Console, exc: CorralError) -> None:
    if isinstance(exc, SpecError):
        console.print(f"[bold red]Error:[/] {len(exc.problems)} problem(s) in {exc.file}:")
        for problem in exc.problems:
            console.print(Text("  " + problem.render()))
        console.print(Text(exc.hint or ""))
        return
    console.print("[bold red]Error:[/] " + Text(exc.message).markup)
    if exc.hint:
        console.print(Text(exc.hint))
