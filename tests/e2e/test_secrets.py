"""Law 5 end to end: secrets are injected at launch, never baked, never at rest in clear.

A secret with a recognisable value is set, used by a tiny app (which reports only the length
and a short hash of what it sees), taken through bake / plan -out / apply / status / events /
logs / history and the agent's metrics and API; then every file under CORRAL_HOME (state
database included) is searched for the value. Rotation shows in the plan as a version change
and replaces the fleet; a rollback brings the old version back.
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import shutil
import stat
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.e2e.conftest import CORRAL, Fleet, free_port

APP = r"""
import hashlib, http.server, json, os, sys

def seen():
    with open("/run/secrets/DB_PASSWORD", "rb") as f:
        data = f.read()
    token = os.environ.get("API_TOKEN", "")
    mode = oct(os.stat("/run/secrets/DB_PASSWORD").st_mode & 0o777)
    return {"len": len(data), "sha": hashlib.sha256(data).hexdigest()[:12],
            "token_len": len(token), "mode": mode}

class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        body = json.dumps(seen()).encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *a):
        pass

print("secret length", seen()["len"], flush=True)
http.server.ThreadingHTTPServer(("127.0.0.1", int(os.environ["PORT"])), H).serve_forever()
"""

SPEC = """
project: sec
images:
  app:
    from: scratch
    copy: [{src: app/, dest: /app}]
    cmd: ["/usr/bin/python3", "/app/server.py"]
services:
  web:
    image: app
    replicas: 2
    secrets:
      DB_PASSWORD: {from: store}
      API_TOKEN: {from: env, key: SEC_TEST_TOKEN, as: env}
    health: {http: {path: /}, interval: 100ms, start_timeout: 10s}
    route: {port: PORT}
    stop_grace: 1s
    drain_timeout: 1s
"""


def _sha(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()[:12]


@pytest.fixture
def secret_fleet(fleet: Fleet) -> Iterator[Fleet]:
    shutil.rmtree(fleet.dir / "app")
    (fleet.dir / "app").mkdir()
    (fleet.dir / "app" / "server.py").write_text(APP)
    fleet.spec.write_text(SPEC.replace("PORT", str(fleet.port)))
    keys = Path(tempfile.mkdtemp(prefix="ck-", dir="/tmp"))  # apart from CORRAL_HOME
    fleet.env["CORRAL_SECRETS_KEY_FILE"] = str(keys / "secrets.key")
    fleet.env["SEC_TEST_TOKEN"] = "tok-" + secrets.token_hex(8)
    try:
        yield fleet
    finally:
        shutil.rmtree(keys, ignore_errors=True)


def _set(fleet: Fleet, name: str, value: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [CORRAL, "secret", "set", name, "--file", str(fleet.spec)],
        input=value + "\n",
        env=fleet.env,
        capture_output=True,
        text=True,
        timeout=30,
    )


def _seen(fleet: Fleet) -> set[str]:
    return {
        json.dumps(httpx.get(fleet.url, headers={"Connection": "close"}, timeout=5).json())
        for _ in range(6)
    }


def _settles_on(fleet: Fleet, sha: str) -> bool:
    """True once every request sees `sha` (the replaced instances may still be draining)."""
    for _ in range(50):
        if {json.loads(s)["sha"] for s in _seen(fleet)} == {sha}:
            return True
        time.sleep(0.2)
    return False


def _hits(root: Path, needles: list[bytes]) -> list[str]:
    found = []
    for path in root.rglob("*"):
        if path.is_file() and not path.is_symlink():
            try:
                data = path.read_bytes()
            except OSError:
                continue
            found += [f"{path}: {n!r}" for n in needles if n in data]
    return found


@pytest.mark.slow  # over ~8 s: in `make test`, not the fast subset
def test_law5_secrets_are_injected_never_stored_in_clear(secret_fleet: Fleet) -> None:
    fleet = secret_fleet
    api = f"http://127.0.0.1:{free_port()}"  # the agent's API on TCP too: its answers are read
    fleet.env["CORRAL_UI_PORT"] = api.rsplit(":", 1)[1]
    old = "S3CR3T-canary-" + secrets.token_hex(12)
    new = "R0T4TED-canary-" + secrets.token_hex(20)
    token = fleet.env["SEC_TEST_TOKEN"]

    # a reference that resolves to nothing: exit 2 before anything starts, saying how to set it
    missing = fleet.run("plan")
    assert missing.returncode == 2, missing.stdout + missing.stderr
    assert "DB_PASSWORD" in missing.stderr and "corral secret set" in missing.stderr

    assert _set(fleet, "DB_PASSWORD", old).returncode == 0
    key_file = Path(fleet.env["CORRAL_SECRETS_KEY_FILE"])
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600

    fleet.ok("bake")
    planned = fleet.ok("plan", "-out", str(fleet.home / "saved.plan"))
    assert "secrets.DB_PASSWORD" in planned.stdout and "v1" in planned.stdout
    fleet.ok("apply", str(fleet.home / "saved.plan"), timeout=120)
    assert _seen(fleet) == {
        json.dumps({"len": len(old), "sha": _sha(old), "token_len": len(token), "mode": "0o400"})
    }

    # rotate: the plan shows the version change, apply replaces, the app sees the new value
    assert _set(fleet, "DB_PASSWORD", new).returncode == 0
    rotated = fleet.ok("plan")
    assert "secrets.DB_PASSWORD = v1 -> v2" in rotated.stdout, rotated.stdout
    assert "-/+" in rotated.stdout
    fleet.ok("apply", timeout=120)
    assert {json.loads(s)["sha"] for s in _seen(fleet)} == {_sha(new)}

    # rollback brings back the version r1 recorded
    fleet.ok("rollback", "web", timeout=120)
    assert _settles_on(fleet, _sha(old))

    outputs = [
        fleet.ok(*args).stdout
        for args in (
            ("status", "--json"),
            ("events", "--json"),
            ("logs", "web", "--json"),
            ("history", "web", "--json"),
            ("plan", "--json"),
            ("secret", "ls", "--json"),
        )
    ]
    assert "secret length" in fleet.ok("logs", "web").stdout
    listed = json.loads(outputs[-1])["secrets"]
    assert [(s["name"], s["version"]) for s in listed] == [("DB_PASSWORD", 2)]
    # the agent's metrics and API (what the dashboard and another machine's CLI read)
    for path in (
        "/metrics",
        "/v1/agent",
        "/v1/status",
        "/v1/events",
        "/v1/logs/web",
        "/v1/services/web/logs",
        "/v1/services/web/releases",
        "/v1/rollouts/web",
        "/v1/fleet",
        "/v1/images",
    ):
        answer = httpx.get(api + path, timeout=10)
        assert answer.status_code == 200, (path, answer.text)
        outputs.append(answer.text)

    needles = [v.encode() for v in (old, new, token)]
    for text in outputs:
        assert not any(n.decode() in text for n in needles)
    assert _hits(fleet.home, needles) == []


def test_a_wrong_key_is_a_clear_error_and_overwrites_nothing(secret_fleet: Fleet) -> None:
    fleet = secret_fleet
    assert _set(fleet, "DB_PASSWORD", "first-value").returncode == 0
    key_file = Path(fleet.env["CORRAL_SECRETS_KEY_FILE"])
    other = key_file.with_name("other.key")
    fleet.env["CORRAL_SECRETS_KEY_FILE"] = str(other)
    refused = _set(fleet, "DB_PASSWORD", "second-value")  # makes `other`, then refuses
    assert refused.returncode == 1, refused.stdout + refused.stderr
    assert "another key" in refused.stderr
    planned = fleet.run("plan")
    assert planned.returncode == 1 and "another key" in planned.stderr
    fleet.env["CORRAL_SECRETS_KEY_FILE"] = str(key_file)
    listed = json.loads(fleet.ok("secret", "ls", "--json").stdout)["secrets"]
    assert [(s["name"], s["version"]) for s in listed] == [("DB_PASSWORD", 1)]
    # a key inside CORRAL_HOME is refused: it would travel with the state
    fleet.env["CORRAL_SECRETS_KEY_FILE"] = str(fleet.home / "secrets.key")
    inside = _set(fleet, "X", "v")
    assert inside.returncode == 2 and "inside CORRAL_HOME" in inside.stderr
    assert not os.path.exists(fleet.home / "secrets.key")
