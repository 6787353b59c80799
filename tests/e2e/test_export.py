"""`corral export kubernetes` through the real CLI: a baked release's objects, valid for two
Kubernetes versions, the same bytes every time, and never a secret value (law 5)."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from ruamel.yaml import YAML

from tests.conformance.gateway_schema import problems
from tests.e2e.conftest import Fleet

kubernetes_validate = pytest.importorskip("kubernetes_validate")

pytestmark = pytest.mark.e2e

TOKEN = "tok-e2e-5be1c09d"


@pytest.fixture
def keys() -> Iterator[Path]:
    made = Path(tempfile.mkdtemp(prefix="ck-", dir="/tmp"))  # apart from CORRAL_HOME
    try:
        yield made
    finally:
        shutil.rmtree(made, ignore_errors=True)


def _with_secret(fleet: Fleet, keys: Path) -> None:
    secret = "    secrets:\n      API_TOKEN: {from: env, key: EXPORT_TOKEN, as: env}\n"
    fleet.edit_spec("      GREETING: hello\n", "      GREETING: hello\n" + secret)
    fleet.env["CORRAL_SECRETS_KEY_FILE"] = str(keys / "secrets.key")
    fleet.env["EXPORT_TOKEN"] = TOKEN


def test_export_writes_valid_deterministic_manifests_without_secret_values(
    fleet: Fleet, keys: Path
) -> None:
    _with_secret(fleet, keys)
    refused = fleet.run("export", "kubernetes", "web")
    assert refused.returncode == 2
    assert "image_registry" in refused.stderr + refused.stdout

    out = fleet.home / "k8s"
    fleet.ok("export", "kubernetes", "web", "--image-registry", "reg.example/team", "-o", str(out))
    text = (out / "web-r1.yaml").read_text()
    again = fleet.ok("export", "kubernetes", "web", "--image-registry", "reg.example/team").stdout
    assert again == text  # deterministic

    assert TOKEN not in text and "stringData" not in text
    docs = list(YAML(typ="safe").load_all(text))
    assert [d["kind"] for d in docs] == ["ReplicaSet", "Service", "HTTPRoute"]
    for version in ("1.29.0", "1.31.0"):
        for doc in docs[:2]:
            kubernetes_validate.validate(doc, version, strict=True)
    assert problems(docs[2]) == []  # HTTPRoute: the Gateway API's own schema
    container = docs[0]["spec"]["template"]["spec"]["containers"][0]
    assert container["image"].startswith("reg.example/team/hello@sha256:")
    env = {e["name"]: e for e in container["env"]}
    assert "secretKeyRef" in env["API_TOKEN"]["valueFrom"]
    assert docs[0]["spec"]["replicas"] == 3

    unknown = fleet.run("export", "kubernetes", "web", "--release", "r7", "--image-registry", "r")
    assert unknown.returncode == 2 and "no release r7" in unknown.stderr + unknown.stdout
