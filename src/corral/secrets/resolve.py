"""References → recorded versions (plan time) → values (launch time only).

A spec names where a secret comes from (`from: store|env|file`, `key`) and how the instance
gets it (`as: file|env`). At plan time each reference is resolved once to what a release
records: the reference plus a keyed digest of the value (and, for the store, its version
number), never the value, so a changed secret is a changed release (law 1) and a rollback
names the version it needs. At launch the recorded versions are turned back into values,
which go to the driver and nowhere else (law 5).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from corral.secrets.crypto import SecretKey, create_key, load_key, load_key_if_present
from corral.secrets.errors import SecretMissing
from corral.secrets.labels import version_label
from corral.secrets.store import SecretStore, missing_hint
from corral.state.protocol import StateStore

SecretAs = Literal["file", "env"]
SECRETS_DIR = "/run/secrets"


def _source(ref: Mapping[str, Any], name: str) -> tuple[str, str]:
    source = str(ref.get("from", "store"))
    return source, str(ref.get("key") or name)


def _read(name: str, source: str, key: str, base_dir: Path | None, env: str) -> str:
    """The current value of a `from: env|file` reference, or SecretMissing."""
    if source == "env":
        value = os.environ.get(key)
        if value is None:
            raise SecretMissing(
                f"secret {name}: environment variable {key} is not set",
                hint=f"Export {key} (in the shell that runs corral and its agent), or keep "
                f"the value in the store: `corral secret set {name} --env {env}`.",
            )
        return value
    path = Path(key).expanduser()
    if not path.is_absolute() and base_dir is not None:
        path = base_dir / path
    try:
        return path.read_text()
    except OSError as exc:
        raise SecretMissing(
            f"secret {name}: cannot read {path} ({exc.strerror or exc})",
            hint=f"Create {path}, or keep the value in the store: "
            f"`corral secret set {name} --env {env}`.",
        ) from exc


def recorded_refs(
    refs: Mapping[str, Mapping[str, Any]],
    state: StateStore,
    key: SecretKey,
    *,
    base_dir: Path | None = None,
) -> dict[str, dict[str, Any]]:
    """What a release records for each secret: reference, digest and (store) version."""
    recorded: dict[str, dict[str, Any]] = {}
    for name in sorted(refs):
        ref = refs[name]
        source, key_name = _source(ref, name)
        entry: dict[str, Any] = {"from": source, "key": key_name, "as": ref.get("as", "file")}
        if source == "store":
            entry["version"], value = SecretStore(state, key).get(key_name)
        else:
            value = _read(name, source, key_name, base_dir, state.env)
        entry["digest"] = key.digest(value)
        recorded[name] = entry
    return recorded


def launch_values(
    recorded: Mapping[str, Mapping[str, Any]],
    state: StateStore,
    key: SecretKey,
    *,
    release: str,
) -> dict[str, tuple[str, SecretAs]]:
    """The values of a release's secrets, exactly the versions it recorded, for the driver."""
    values: dict[str, tuple[str, SecretAs]] = {}
    for name in sorted(recorded):
        ref = recorded[name]
        source, key_name = _source(ref, name)
        if source == "store":
            _, value = SecretStore(state, key).get(key_name, int(ref["version"]))
        else:
            value = _read(name, source, key_name, None, state.env)
        if key.digest(value) != ref.get("digest"):
            raise SecretMissing(
                f"{release} was made with secret {name} at {version_label(ref)} "
                f"(from {source} {key_name}), which is no longer available: it now reads "
                f"{version_label({'digest': key.digest(value)})}",
                hint=(
                    f"Set {key_name} back to the value {release} used, or apply the spec to "
                    "make a release with the current value."
                    if source != "store"
                    else missing_hint(key_name, int(ref["version"]), state.env)
                ),
            )
        as_: SecretAs = "env" if ref.get("as") == "env" else "file"
        values[name] = (value, as_)
    return values


def spec_secrets(
    refs: Mapping[str, Any], state: StateStore, home: Path, base_dir: Path
) -> dict[str, dict[str, Any]]:
    """A spec's references (`SecretRef` models or dicts) resolved to what the release records;
    {} without secrets (no key is read). Nothing that resolves to no value passes (exit 2)."""
    if not refs:
        return {}
    plain = {
        name: ref.model_dump(by_alias=True) if hasattr(ref, "model_dump") else dict(ref)
        for name, ref in refs.items()
    }
    key = load_key_if_present(home=home)
    if key is None:
        stored = [n for n, r in plain.items() if r.get("from", "store") == "store"]
        if not stored:  # env/file values need a key only for their digests: make one
            key = create_key(home=home)
        elif not any(state.get_secret(_source(plain[n], n)[1]) for n in stored):
            name = stored[0]
            key_name = _source(plain[name], name)[1]
            raise SecretMissing(
                f"secret {name}: no secret {key_name!r} in the store of environment {state.env!r}",
                hint=missing_hint(key_name, None, state.env),
            )
        else:
            key = load_key(home=home)  # raises, naming the file it looked for
    return recorded_refs(plain, state, key, base_dir=base_dir)
