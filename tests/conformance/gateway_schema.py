"""Validation of an HTTPRoute against the Gateway API's own schema (vendored data, see
tests/conformance/data/README.md), with its ObjectMeta from the Kubernetes schemas that
`kubernetes-validate` ships. No network: both are files on this machine."""

from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

SCHEMA = Path(__file__).parent / "data" / "gateway-api-httproute-v1.json"
KUBERNETES = "v1.31.0-local-strict"  # the kubernetes-validate schemas ObjectMeta comes from
_META_REF = "io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta"  # as the HTTPRoute schema names it


@functools.cache
def _validator() -> jsonschema.Draft202012Validator:
    validate = pytest.importorskip("kubernetes_validate")
    root = Path(validate.__file__).parent / "kubernetes-json-schema" / KUBERNETES

    def resource(path: Path) -> Resource[Any]:
        return Resource.from_contents(
            json.loads(path.read_text()), default_specification=DRAFT202012
        )

    meta = resource(root / "objectmeta-meta-v1.json")
    definitions = resource(root / "_definitions.json")
    # ObjectMeta's own refs are absolute paths: under the relative name the HTTPRoute schema
    # gives it, they resolve to the bare path
    registry: Registry[Any] = Registry().with_resources(
        [
            (_META_REF, meta),
            ("/api/_definitions.json", definitions),
            ("https://kubernetes.io/api/_definitions.json", definitions),
        ]
    )
    schema = json.loads(SCHEMA.read_text())
    return jsonschema.Draft202012Validator(schema, registry=registry)


def problems(route: dict[str, Any]) -> list[str]:
    """What the schema finds wrong with `route` (empty: valid), each with its path."""
    return [
        f"{'/'.join(str(p) for p in error.absolute_path) or '(root)'}: {error.message}"
        for error in _validator().iter_errors(route)
    ]
