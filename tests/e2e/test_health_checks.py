"""Exec checks and startup / liveness probes with the real agent and local instances.

The app is the example's fleet with its own small server: it writes /tmp/alive at start (the
instance's private /tmp, seen by an exec check only if it really runs inside), deletes it on
GET /sicken, and writes /tmp/warm $WARM_AFTER seconds after it starts.
"""

from __future__ import annotations

import textwrap
import time
from typing import Any

import httpx
import pytest

from tests.e2e.conftest import Fleet
from tests.e2e.test_heal import events, wait_for

APP = textwrap.dedent(
    """
    import json, os, pathlib, threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    ALIVE, WARM = pathlib.Path("/tmp/alive"), pathlib.Path("/tmp/warm")
    ALIVE.write_text("yes")
    threading.Timer(float(os.environ.get("WARM_AFTER", "0")), WARM.write_text, ("yes",)).start()
    ME = {"release": os.environ["CORRAL_RELEASE"], "instance": os.environ["CORRAL_INSTANCE"]}

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_GET(self):
            if self.path == "/sicken":
                ALIVE.unlink(missing_ok=True)
            body = (json.dumps(ME) + "\\n").encode()
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    ThreadingHTTPServer(("127.0.0.1", int(os.environ["PORT"])), Handler).serve_forever()
    """
)

HEALTH = """    health:
      http: {path: /healthz}
      interval: 100ms
      start_timeout: 10s
"""


def use_app(fleet: Fleet, health: str, replicas: int) -> None:
    (fleet.dir / "app" / "probed.py").write_text(APP)
    fleet.edit_spec("/app/server.py", "/app/probed.py")
    fleet.edit_spec(HEALTH, textwrap.indent(textwrap.dedent(health), "    "))
    fleet.edit_spec("replicas: 3", f"replicas: {replicas}")
    fleet.edit_spec("GREETING: hello", 'WARM_AFTER: "0"')


def instances(fleet: Fleet) -> list[dict[str, Any]]:
    return fleet.status()["services"][0]["instances"]  # type: ignore[no-any-return]


@pytest.mark.slow  # over ~5 s: in `make test`, not the fast subset
def test_failing_exec_liveness_replaces_the_instance_with_the_reason(fleet: Fleet) -> None:
    use_app(
        fleet,
        """\
        health:
          http: {path: /healthz}
          interval: 100ms
          start_timeout: 10s
          liveness:
            exec: [test, -f, /tmp/alive]
            interval: 200ms
            failure_threshold: 2
        """,
        replicas=2,
    )
    fleet.ok("apply")
    before = {i["id"]: i for i in instances(fleet)}
    victim = sorted(before)[0]
    time.sleep(1.0)  # several liveness rounds pass: the check passes while the file is there
    assert {i["id"] for i in instances(fleet)} == set(before)

    httpx.get(f"http://{before[victim]['address']}/sicken", timeout=5.0)

    def replaced() -> bool:
        now = instances(fleet)
        return victim not in {i["id"] for i in now} and sum(
            i["health"] == "ready" for i in now
        ) == len(before)

    wait_for(replaced, timeout=40)
    now = {i["id"]: i for i in instances(fleet)}
    fresh = set(now) - set(before)
    assert len(fresh) == 1
    assert now[fresh.pop()]["serial"] == before[victim]["serial"]  # the same slot, fresh copy
    assert {i["release"] for i in now.values()} == {"r1"}
    found = events(fleet)
    [unhealthy] = [e for e in found if e["kind"] == "instance.unhealthy"]
    assert unhealthy["data"]["instance"] == victim
    assert unhealthy["data"]["reason"] == "liveness"
    assert unhealthy["data"]["check"] == "liveness exec `test -f /tmp/alive`"
    assert unhealthy["data"]["error"] == "`test -f /tmp/alive` exited 1"
    assert any(e["kind"] == "heal.succeeded" and victim in e["message"] for e in found)
    shown = fleet.ok("events").stdout
    assert "liveness" in shown and victim in shown


@pytest.mark.slow  # over ~8 s: in `make test`, not the fast subset
def test_a_slow_startup_keeps_the_instance_out_of_routing_and_liveness_waits(
    fleet: Fleet,
) -> None:
    # liveness checks the very file startup waits for: judged before startup, it would kill
    health = """\
        health:
          http: {path: /healthz}
          interval: 100ms
          start_timeout: 10s
          startup:
            exec: [test, -f, /tmp/warm]
            interval: 200ms
            failure_threshold: 100
          liveness:
            exec: [test, -f, /tmp/warm]
            interval: 200ms
            failure_threshold: 1
        """
    use_app(fleet, health, replicas=1)
    fleet.ok("apply")
    [first] = instances(fleet)
    assert first["release"] == "r1"

    fleet.edit_spec('WARM_AFTER: "0"', 'WARM_AFTER: "6"')  # r2 warms up for 6 s
    apply = fleet.popen("apply")
    try:
        seen_starting = 0
        deadline = time.monotonic() + 60
        while apply.poll() is None and time.monotonic() < deadline:
            answer = fleet.get()
            r2 = [i for i in instances(fleet) if i["release"] == "r2"]
            if answer["release"] == "r2":
                # it answered, so it was routed: it must be ready by now (ready stays ready)
                assert r2 and r2[0]["health"] == "ready", r2
            elif r2 and r2[0]["health"] == "starting":
                seen_starting += 1
        out, err = apply.communicate(timeout=60)
        assert apply.returncode == 0, out + err
    finally:
        if apply.poll() is None:
            apply.kill()
        apply.communicate()
    assert seen_starting >= 1  # it was looked at while warming up, out of routing
    [now] = instances(fleet)
    assert (now["release"], now["health"]) == ("r2", "ready")
    kinds = [e["kind"] for e in events(fleet)]
    assert "instance.unhealthy" not in kinds  # liveness never judged it during startup
    assert not any(k.startswith("heal.") for k in kinds)
    assert fleet.get()["instance"] == now["id"]
