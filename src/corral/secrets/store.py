"""Secret versions in the state store, sealed and opened with the secrets key.

The state store only ever sees ciphertext and the key's id. Every version records the id of
the key that sealed it; a key whose id differs is refused before anything is decrypted or
written, so a wrong key can neither read garbage nor mix two keys in one store.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from corral.errors import UsageError
from corral.secrets.crypto import KEY_FILE_VAR, SecretKey
from corral.secrets.errors import SecretKeyError, SecretMissing
from corral.state.protocol import StateStore
from corral.state.records import SecretVersion

KEEP_VERSIONS = 10
NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")


def check_name(name: str) -> str:
    if not NAME_PATTERN.match(name):
        raise UsageError(
            f"{name!r} is not a usable secret name",
            hint="Use letters, digits, '_', '.' and '-' (at most 128), starting with a letter "
            "or digit.",
        )
    return name


@dataclass
class SecretStore:
    state: StateStore
    key: SecretKey

    def _check_key(self, record: SecretVersion) -> None:
        if record.key_id != self.key.key_id:
            raise SecretKeyError(
                f"secret {record.name!r} v{record.version} was sealed with another key "
                f"(id {record.key_id}); the key in {self.key.path} has id {self.key.key_id}",
                hint=f"Point ${KEY_FILE_VAR} at the key the secrets were set with. Nothing "
                "was decrypted or written.",
            )

    def set(self, name: str, value: str, *, created_by: str, keep: int = KEEP_VERSIONS) -> int:
        """Seal and store a new version; its number."""
        check_name(name)
        for record in self.state.list_secrets():  # one key per environment, never two
            self._check_key(record)
        stored = self.state.put_secret(
            name,
            self.key.seal(value, f"{self.state.env}/{name}"),
            self.key.key_id,
            created_by=created_by,
            keep=keep,
        )
        return stored.version

    def get(self, name: str, version: int | None = None) -> tuple[int, str]:
        """(version, value) of that version, or the newest."""
        record = self.state.get_secret(name, version)
        if record is None:
            which = f"version v{version} of secret" if version is not None else "secret"
            raise SecretMissing(
                f"no {which} {name!r} in the secret store of environment {self.state.env!r}",
                hint=missing_hint(name, version, self.state.env),
            )
        self._check_key(record)
        return record.version, self.key.open(record.ciphertext, f"{self.state.env}/{name}")


def missing_hint(name: str, version: int | None, env: str) -> str:
    how = f"`corral secret set {name} --env {env} < value-file` stores it"
    if version is None:
        return f"{how}."
    return (
        f"The store keeps the last {KEEP_VERSIONS} versions; v{version} is gone. {how} as a new "
        "version; then apply (a release with the new version)."
    )
