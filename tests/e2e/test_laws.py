"""One end-to-end check per law the trunk touches, each of which fails if the law is broken.

Law 2 (content addressing) is defended in tests/unit/test_images.py; law 7 (write-ahead) in
test_crash_and_lock.py; law 6 (traffic only to ready instances) under load in test_trunk.py.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.e2e.conftest import CORRAL, Fleet


def test_law1_an_instance_cannot_change_its_image_and_a_change_replaces_it(fleet: Fleet) -> None:
    """Law 1: an instance sees its image read-only; a config change makes new instances."""
    probe = fleet.dir / "app" / "probe.py"
    probe.write_text(
        "import os, sys\n"
        "try:\n"
        "    open('/app/VERSION', 'w').write('tampered')\n"
        "    print('WROTE IMAGE FILE', flush=True)\n"
        "except OSError as exc:\n"
        "    print('image is read-only:', exc.strerror, flush=True)\n"
        "os.execv(sys.executable, [sys.executable, '/app/server.py'])\n"
    )
    fleet.edit_spec(
        'cmd: ["/usr/bin/python3", "/app/server.py"]', 'cmd: ["/usr/bin/python3", "/app/probe.py"]'
    )
    fleet.ok("apply")
    logs = fleet.ok("logs", "web").stdout
    assert "image is read-only" in logs and "WROTE IMAGE FILE" not in logs
    assert {fleet.get()["version"] for _ in range(6)} == {"v1"}
    before = {i["id"]: i for i in fleet.status()["services"][0]["instances"]}
    fleet.edit_spec("GREETING: hello", "GREETING: bonjour")
    fleet.ok("apply")
    after = {i["id"]: i for i in fleet.status()["services"][0]["instances"]}
    assert not set(before) & set(after)  # replaced, not changed in place
    assert {fleet.get()["greeting"] for _ in range(6)} == {"bonjour"}


@pytest.mark.slow  # over ~5 s: in `make test`, not the fast subset
def test_law3_one_release_one_truth(fleet: Fleet) -> None:
    """Law 3: a (digest, config) is one release, never edited; returning to it reuses it."""
    fleet.ok("apply")
    r1 = json.loads(fleet.ok("history", "web", "--json").stdout)["releases"][0]
    fleet.set_version("v2")
    fleet.ok("apply")
    fleet.set_version("v1")
    plan = json.loads(fleet.ok("plan", "--json").stdout)
    assert plan["actions"][0]["to_release"] == "r1"  # the same content is the same release
    fleet.ok("apply")
    history = json.loads(fleet.ok("history", "web", "--json").stdout)
    assert [r["release"] for r in history["releases"]] == ["r1", "r2"]
    again = history["releases"][0]
    immutable = ("release", "number", "image_digest", "config_hash", "created_at", "created_by")
    assert {k: again[k] for k in immutable} == {k: r1[k] for k in immutable}  # never edited
    assert again["current"] is True  # running again
    instances = fleet.status()["services"][0]["instances"]
    assert {i["release"] for i in instances} == {"r1"}
    assert {i["image"] for i in instances} == {r1["image_digest"]}


def test_law2_the_same_spec_bakes_the_same_digest_in_another_checkout(
    fleet: Fleet, tmp_path: Path
) -> None:
    """Law 2, end to end: a copy of the project elsewhere bakes the identical image."""
    digest = json.loads(fleet.ok("bake", "--json").stdout)["images"][0]["digest"]
    other = tmp_path / "elsewhere"
    shutil.copytree(fleet.dir, other)
    for path in other.rglob("*"):
        path.touch()
    result = subprocess.run(
        [CORRAL, "bake", "--json", "--file", str(other / "corral.yaml")],
        env={**fleet.env, "CORRAL_HOME": str(tmp_path / "home2")},
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert json.loads(result.stdout)["images"][0]["digest"] == digest
