"""`corral bake`, `corral images` and `corral image …` through the real CLI.

A busybox-based image served by the local driver (its own OS, read-only), deployed from the
prod channel; a revoked image refused by plan; gc, verify, --check; export → `docker load`
gives the image ID corral shows (when a Docker engine answers).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.e2e.conftest import CORRAL, free_port, kill_everything_of

SPEC = """\
project: imgs
images:
  base:
    from: busybox
    run:
      - mkdir -p /www && echo base > /www/base.txt
  web:
    from: image:base
    copy:
      - src: site
        dest: /www
    cmd: ["httpd", "-f", "-h", "/www"]
services:
  web:
    image: web@prod
    command: ["sh", "-c", "exec httpd -f -p $PORT -h /www"]
    route:
      port: {port}
"""


class Cli:
    def __init__(self, home: Path, work: Path, port: int) -> None:
        self.home, self.dir, self.port = home, work, port
        self.env = {**os.environ, "CORRAL_HOME": str(home), "NO_COLOR": "1", "COLUMNS": "200"}

    def run(self, *args: str, home: Path | None = None) -> subprocess.CompletedProcess[str]:
        env = self.env | ({"CORRAL_HOME": str(home)} if home else {})
        return subprocess.run(
            [CORRAL, *args],
            cwd=self.dir,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )

    def ok(self, *args: str, home: Path | None = None) -> str:
        done = self.run(*args, home=home)
        assert done.returncode == 0, f"corral {' '.join(args)}: {done.stdout}\n{done.stderr}"
        return done.stdout


@pytest.fixture
def cli() -> Iterator[Cli]:
    if shutil.which("bwrap") is None or shutil.which("apt-get") is None:
        pytest.skip("needs bubblewrap and apt-get")
    home = Path(tempfile.mkdtemp(prefix="ci-", dir="/tmp"))
    work = home / "work"
    (work / "site").mkdir(parents=True)
    (work / "site" / "index.html").write_text("<h1>v1</h1>\n")
    port = free_port()
    (work / "corral.yaml").write_text(SPEC.format(port=port))
    cli = Cli(home, work, port)
    try:
        yield cli
    finally:
        if "CORRAL_STATE_URL" in cli.env:  # state outside the home: remove it through corral
            cli.run("destroy")
            cli.run("agent", "stop")
        kill_everything_of(home)
        shutil.rmtree(home, ignore_errors=True)


def images_json(cli: Cli) -> list[dict[str, object]]:
    return json.loads(cli.ok("images", "--json"))["images"]  # type: ignore[no-any-return]


@pytest.mark.slow  # over ~8 s: in `make test`, not the fast subset
def test_bake_promote_deploy_revoke_gc(cli: Cli) -> None:
    cli.ok("bake")
    lock = json.loads((cli.dir / "corral.lock").read_text())
    assert lock["bases"]["busybox"]["package"] == "busybox-static"
    web = next(i for i in images_json(cli) if i["name"] == "web")
    digest = str(web["digest"])
    assert str(web["base"]).startswith("image:base@sha256:") and web["channels"] == ["dev"]
    warm = json.loads(cli.ok("bake", "--json"))["images"]
    assert {i["name"]: i["digest"] for i in warm}["web"] == digest  # same inputs, same digest

    plan = cli.run("plan")  # nothing is in prod yet
    assert plan.returncode == 2 and "prod channel" in plan.stderr
    assert cli.run("image", "promote", f"web@{digest}", "--to", "prod").returncode == 2
    cli.ok("image", "promote", f"web@{digest}", "--to", "staging")
    cli.ok("image", "promote", f"web@{digest}", "--to", "prod")
    cli.ok("apply")
    assert httpx.get(f"http://127.0.0.1:{cli.port}/", timeout=5).text == "<h1>v1</h1>\n"
    web = next(i for i in images_json(cli) if i["name"] == "web")
    assert web["channels"] == ["dev", "staging", "prod"] and web["releases"] == ["dev/web r1"]

    (cli.dir / "site" / "index.html").write_text("<h1>v2</h1>\n")
    cli.ok("bake")  # a new dev digest; prod still holds the first
    assert "nothing to do" in cli.ok("plan") + cli.run("plan").stderr

    cli.ok("image", "revoke", digest, "--reason", "CVE-2026-1 in httpd")
    refused = cli.run("plan")
    assert refused.returncode == 2 and "revoked: CVE-2026-1 in httpd" in refused.stderr

    gc = json.loads(cli.ok("image", "gc", "--keep", "1", "--grace", "0", "--json"))
    assert gc["removed_images"] == []  # the old web is in prod and used by r1
    assert "ok" in cli.ok("image", "verify")

    # A saved plan is checked again at apply: an image revoked in between is refused.
    v2 = next(i for i in images_json(cli) if i["name"] == "web" and i["current"])["digest"]
    cli.ok("image", "promote", f"web@{v2}", "--to", "staging")
    cli.ok("image", "promote", f"web@{v2}", "--to", "prod")
    cli.ok("plan", "--out", "saved.plan")
    cli.ok("image", "revoke", str(v2), "--reason", "bad v2")
    late = cli.run("apply", "saved.plan")
    assert late.returncode == 2 and "revoked: bad v2" in late.stderr
    assert httpx.get(f"http://127.0.0.1:{cli.port}/", timeout=5).text == "<h1>v1</h1>\n"


def test_bake_check_and_export_import(cli: Cli, tmp_path: Path) -> None:
    cli.ok("bake")
    check = json.loads(cli.ok("bake", "--check", "--json"))
    assert all(item["reproducible"] for item in check["images"])
    web = next(i for i in images_json(cli) if i["name"] == "web")

    cli.ok("image", "export", "--bases", "-o", str(tmp_path / "bases.tar"))
    cli.ok("image", "export", "web", "-o", str(tmp_path / "web.tar"))
    other = tmp_path / "other-home"
    cli.ok("image", "import", str(tmp_path / "bases.tar"), home=other)
    imported = json.loads(
        cli.ok("image", "import", str(tmp_path / "web.tar"), "--json", home=other)
    )
    assert imported["images"] == [{"name": "web", "digest": web["digest"]}]
    sbom = json.loads(cli.ok("image", "sbom", "web", home=other))  # came with the image
    assert sbom["bomFormat"] == "CycloneDX"
    purls = [c.get("purl", "") for c in sbom["components"]]
    assert any(p.startswith("pkg:deb/debian/busybox-static@") for p in purls)  # from its base
    listed = next(c for c in sbom["components"] if c["name"] == "files")["components"]
    assert "/www/index.html" in {f["name"] for f in listed}

    if subprocess.run(["docker", "info"], capture_output=True, check=False).returncode != 0:
        return  # no engine here: the archive's layout is checked by the unit tests
    loaded = subprocess.run(
        ["docker", "load", "-i", str(tmp_path / "web.tar")], capture_output=True, text=True
    )
    assert loaded.returncode == 0, loaded.stderr
    tag = loaded.stdout.strip().rsplit(" ", 1)[-1]
    try:
        image_id = subprocess.run(
            ["docker", "image", "inspect", "--format", "{{.Id}}", tag],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        assert image_id == web["config_digest"]
    finally:
        subprocess.run(["docker", "rmi", "-f", tag], capture_output=True, check=False)


def test_a_failing_step_exits_1_and_stores_nothing(cli: Cli) -> None:
    spec = cli.dir / "corral.yaml"
    spec.write_text(spec.read_text().replace("mkdir -p /www &&", "echo boom; exit 7;"))
    failed = cli.run("bake")
    assert failed.returncode == 1
    assert "exit status 7" in failed.stderr and "boom" in failed.stderr
    assert images_json(cli) == []
    assert free_port()  # nothing bound
