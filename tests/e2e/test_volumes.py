"""Law 4 through the real CLI: data on a volume outlives roll-outs and `destroy`, and a
single_writer volume is handed over stop-first with no request dropped (law 6)."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.conftest import Fleet, Load, free_port, kill_everything_of

# On start: take the volume's lock (a second writer would fail to start), then append its
# release to /data/history. GET / shows the history it read; /healthz is the check.
APP = """\
import fcntl, json, os, sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
lock = open("/data/lock", "w")
try:
    fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
except OSError:
    sys.exit("the volume is held by another writer")
release = os.environ["CORRAL_RELEASE"]
with open("/data/history", "a") as f:
    f.write(release + "\\n")
history = open("/data/history").read().split()
class H(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def do_GET(self):
        body = json.dumps({"release": release, "history": history}).encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *a):
        pass
server = ThreadingHTTPServer(("127.0.0.1", int(os.environ["PORT"])), H)
import signal, threading
signal.signal(signal.SIGTERM, lambda *a: threading.Thread(target=server.shutdown).start())
server.serve_forever()
"""

SPEC = """\
project: vols
images:
  app:
    from: scratch
    copy:
      - {src: app/, dest: /app}
    cmd: ["/usr/bin/python3", "/app/server.py"]
services:
  web:
    image: app
    env: {V: "1"}
    health: {http: {path: /healthz}, interval: 100ms, start_timeout: 10s}
    route: {port: PORT}
    volumes:
      - {name: data, path: /data, single_writer: true}
    handover_timeout: 4s
    stop_grace: 3s
    drain_timeout: 2s
"""


@pytest.fixture
def vfleet() -> Iterator[Fleet]:
    home = Path(tempfile.mkdtemp(prefix="cv-", dir="/tmp"))
    work = home / "work"
    (work / "app").mkdir(parents=True)
    (work / "app" / "server.py").write_text(APP)
    port = free_port()
    (work / "corral.yaml").write_text(SPEC.replace("PORT", str(port)))
    env = {**os.environ, "CORRAL_HOME": str(home), "CORRAL_AGENT_TICK": "0.2", "NO_COLOR": "1"}
    env["COLUMNS"] = "200"
    env.pop("CORRAL_STATE_URL", None)
    the_fleet = Fleet(home=home, dir=work, port=port, env=env)
    try:
        yield the_fleet
    finally:
        kill_everything_of(home)  # local driver, state and volumes in the home
        shutil.rmtree(home, ignore_errors=True)


@pytest.mark.slow  # over ~8 s: in `make test`, not the fast subset
def test_a_single_writer_volume_keeps_its_data_across_roll_outs_and_destroy(
    vfleet: Fleet,
) -> None:
    vfleet.ok("apply")
    assert vfleet.get()["history"] == ["r1"]
    volume = vfleet.home / "volumes" / "dev" / "vols" / "data"
    assert (volume / "history").read_text() == "r1\n"

    vfleet.edit_spec('V: "1"', 'V: "2"')
    plan = vfleet.ok("plan").stdout
    assert "stop-first" in plan and "4s" in plan  # the plan says traffic is held, how long

    with Load(vfleet.url, clients=3) as load:
        time.sleep(0.3)
        result = vfleet.run("apply")
        time.sleep(0.3)
    assert result.returncode == 0, result.stdout + result.stderr
    assert load.failed == 0, dict(load.errors)  # held, not refused, during the hand-over
    assert load.releases["r1"] and load.releases["r2"]
    assert vfleet.get()["history"] == ["r1", "r2"]  # r2 read what r1 wrote

    destroyed = vfleet.ok("destroy").stdout
    assert "Volumes kept: data" in destroyed
    assert (volume / "history").read_text() == "r1\nr2\n"

    vfleet.ok("apply")
    assert vfleet.get()["history"] == ["r1", "r2", "r2"]  # the data outlived destroy

    listed = json.loads(vfleet.ok("volume", "ls", "--json").stdout)["volumes"]
    assert [(v["name"], v["serial"], len(v["used_by"])) for v in listed] == [("data", None, 1)]
    in_use = vfleet.run("volume", "rm", "data", "--yes")
    assert in_use.returncode == 2 and "mounted by live instance" in in_use.stderr
    vfleet.ok("destroy")
    unconfirmed = vfleet.run("volume", "rm", "data")
    assert unconfirmed.returncode == 2 and "--yes" in unconfirmed.stderr
    assert volume.is_dir()
    vfleet.ok("volume", "rm", "data", "--yes")
    assert not volume.exists()
    missing = vfleet.run("volume", "rm", "data", "--yes")
    assert missing.returncode == 2 and "no volume named" in missing.stderr


def test_a_volume_over_an_image_path_is_refused_before_anything_starts(vfleet: Fleet) -> None:
    vfleet.edit_spec("path: /data,", "path: /app,")
    result = vfleet.run("apply")
    assert result.returncode == 2, result.stdout + result.stderr
    assert (
        "corral.yaml:15:28: services.web.volumes[0].path" in result.stderr
        and "would hide" in result.stderr
    )
    assert not (vfleet.home / "volumes").exists()


@pytest.mark.slow  # over ~5 s: in `make test`, not the fast subset
def test_after_an_agent_restart_the_route_still_holds_through_a_hand_over(vfleet: Fleet) -> None:
    """The restarted agent reopens the route with the service's handover_timeout, so a
    stop-first roll-out after `agent restart` drops nothing either (law 6)."""
    vfleet.ok("apply")
    vfleet.ok("agent", "restart")
    vfleet.edit_spec('V: "1"', 'V: "2"')
    with Load(vfleet.url, clients=3) as load:
        time.sleep(0.3)
        result = vfleet.run("apply")
        time.sleep(0.3)
    assert result.returncode == 0, result.stdout + result.stderr
    assert load.failed == 0, dict(load.errors)
    assert load.releases["r1"] and load.releases["r2"]
    assert vfleet.get()["history"] == ["r1", "r2"]
