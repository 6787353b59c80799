"""The difference between two releases of a service: image digest and config keys.

One function for the API (`GET /v1/services/{name}/releases/{a}/diff/{b}`) and the CLI
(`corral history SERVICE --diff rA rB`). A secret shows as its reference and version
(`store:db as file v2`, or `#1a2b3c4d` for env/file sources), never its value (law 5).
"""

from __future__ import annotations

import re
from typing import Any

from corral.api_schema import ConfigChange, ImageChange, ReleaseDiff
from corral.errors import UsageError
from corral.releases import canonical_json, flatten
from corral.secrets.labels import version_label
from corral.state.protocol import StateStore
from corral.state.records import Release

_NAME = re.compile(r"^r?(\d{1,9})$")


def release_number(name: str) -> int:
    found = _NAME.match(name.strip())
    if found is None:
        raise UsageError(
            f"{name!r} is not a release name",
            hint="Name releases as rN (r1, r2, …); `corral history SERVICE` lists them.",
        )
    return int(found.group(1))


def diff_of(store: StateStore, service: str, a: str, b: str) -> ReleaseDiff:
    """Look both releases up (UsageError naming what exists when one is missing) and diff."""
    found = {r.number: r for r in store.list_releases(service)}
    if not found:
        raise UsageError(
            f"no service named {service!r} with releases in this environment",
            hint="`corral status` lists the recorded services.",
        )
    picked = []
    for name in (a, b):
        number = release_number(name)
        if number not in found:
            raise UsageError(
                f"{service} has no release r{number}",
                hint=f"Its releases are {', '.join(f'r{n}' for n in sorted(found))}.",
            )
        picked.append(found[number])
    return diff(picked[0], picked[1])


def diff(before: Release, after: Release) -> ReleaseDiff:
    old, new = _shown(before.config), _shown(after.config)
    changes = []
    for key in sorted(old.keys() | new.keys()):
        if old.get(key) == new.get(key):
            continue
        kind = "added" if key not in old else "removed" if key not in new else "changed"
        changes.append(ConfigChange(key=key, change=kind, before=old.get(key), after=new.get(key)))
    return ReleaseDiff(
        service=after.service,
        from_release=before.name,
        to_release=after.name,
        image=ImageChange(
            before=before.image_digest,
            after=after.image_digest,
            changed=before.image_digest != after.image_digest,
        ),
        config_hash_changed=before.config_hash != after.config_hash,
        config=changes,
    )


def _shown(config: dict[str, Any]) -> dict[str, str]:
    """Flattened config as text; each secret as `source:key version`, nothing more."""
    secrets = config.get("secrets") or {}
    shown = {
        key: value if isinstance(value, str) else canonical_json(value)
        for key, value in flatten({k: v for k, v in config.items() if k != "secrets"}).items()
    }
    for name in sorted(secrets):
        ref = secrets[name]
        where = (
            f"{ref.get('from', '?')}:{ref.get('key', name)} as {ref.get('as', 'file')}"
            if isinstance(ref, dict)
            else ""
        )
        shown[f"secrets.{name}"] = f"{where} {version_label(ref)}".strip()
    return shown
