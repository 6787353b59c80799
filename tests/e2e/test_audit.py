"""`corral audit` end to end: a real fleet, a byte changed on the host, exit codes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.e2e.conftest import Fleet


@pytest.mark.slow  # over ~8 s: in `make test`, not the fast subset
def test_audit_clean_then_one_tampered_byte_names_the_file_and_every_instance(
    fleet: Fleet,
) -> None:
    fleet.ok("apply")
    # Without the agent nothing heals meanwhile: the audit alone is under test.
    fleet.ok("agent", "stop")
    clean = fleet.run("audit", "--json")
    assert clean.returncode == 0, clean.stdout + clean.stderr
    report = json.loads(clean.stdout)
    ids = sorted(i["id"] for i in report["instances"])
    assert len(ids) == 3 and {i["status"] for i in report["instances"]} == {"clean"}

    (rootfs,) = {Path(i["rootfs"]) for i in report["instances"]}
    target = rootfs / "app" / "server.py"
    data = bytearray(target.read_bytes())
    data[-2] ^= 0x20  # one byte, as root on the host, same size
    target.write_bytes(bytes(data))

    tampered = fleet.run("audit")
    assert tampered.returncode == 4, tampered.stdout + tampered.stderr
    assert "tampered: /app/server.py sha256" in tampered.stdout
    for instance_id in ids:
        assert f"{instance_id} (web r1): drift" in tampered.stdout
    assert f"shared by {', '.join(ids)}" in tampered.stdout
    as_json = json.loads(fleet.run("audit", "web", "--json").stdout)
    for item in as_json["instances"]:
        assert [f["path"] for f in item["files"]] == ["/app/server.py"]
        assert sorted([item["id"], *item["shared_with"]]) == ids


def test_host_baseline_then_a_change_exits_4(fleet: Fleet, tmp_path: Path) -> None:
    watched = tmp_path / "etc"
    watched.mkdir()
    (watched / "app.conf").write_text("port = 80\n")
    fleet.ok("audit", "host", "--init", "--paths", str(watched))
    assert fleet.run("audit", "host").returncode == 0
    (watched / "app.conf").write_text("port = 81\n")
    changed = fleet.run("audit", "host")
    assert changed.returncode == 4, changed.stdout + changed.stderr
    assert f"changed: {watched / 'app.conf'} sha256" in changed.stdout
    assert "(after boot)" in changed.stdout
