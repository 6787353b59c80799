"""Named tokens that authorise actions over the agent's TCP API (the dashboard, scripts).

Only a token's sha256 is kept, in `$CORRAL_HOME/ui-tokens.json` (mode 0600): the token itself
is shown once, at creation. The file is read on every check, so `corral ui token revoke`
takes effect at once, with no agent restart. The unix socket needs no token: its file mode
already limits it to the owner.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import re
import secrets
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from corral.errors import UsageError

PREFIX = "corral_"
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.@-]{0,63}$")


@dataclass(frozen=True)
class TokenInfo:
    name: str
    created_at: float

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "created_at": self.created_at}


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


class TokenStore:
    def __init__(self, path: Path) -> None:
        self.path = path

    @classmethod
    def of_home(cls, root: Path) -> TokenStore:
        return cls(root / "ui-tokens.json")

    def _read(self) -> list[dict[str, Any]]:
        try:
            data = json.loads(self.path.read_text())
        except FileNotFoundError:
            return []
        except (OSError, ValueError) as exc:
            raise UsageError(
                f"cannot read the token file {self.path}: {exc}",
                hint="Fix or remove it, then create the tokens again.",
            ) from exc
        return list(data.get("tokens", []))

    def _write(self, entries: list[dict[str, Any]]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        side = self.path.with_name(self.path.name + f".{os.getpid()}.tmp")
        fd = os.open(side, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as handle:
            json.dump({"tokens": entries}, handle, indent=2)
        os.replace(side, self.path)  # atomic: a reader never sees half a file

    def create(self, name: str) -> str:
        """A new token for `name`; returns the token (the only time it is ever shown)."""
        if not _NAME.match(name):
            raise UsageError(
                f"bad token name {name!r}",
                hint="Use letters, digits and . _ @ - (up to 64), starting with a letter or digit.",
            )
        entries = self._read()
        if any(e["name"] == name for e in entries):
            raise UsageError(
                f"a token named {name!r} exists already",
                hint=f"Revoke it first (`corral ui token revoke {name}`) or pick another name.",
            )
        token = PREFIX + secrets.token_urlsafe(32)
        entries.append({"name": name, "sha256": _digest(token), "created_at": time.time()})
        self._write(entries)
        return token

    def list(self) -> list[TokenInfo]:
        return [TokenInfo(e["name"], float(e["created_at"])) for e in self._read()]

    def revoke(self, name: str) -> None:
        entries = self._read()
        kept = [e for e in entries if e["name"] != name]
        if len(kept) == len(entries):
            raise UsageError(
                f"no token named {name!r}", hint="`corral ui token ls` lists the tokens."
            )
        self._write(kept)

    def verify(self, token: str) -> str | None:
        """The name of the token, or None when it is unknown or revoked."""
        digest = _digest(token)
        found = None
        for entry in self._read():
            # compare every entry in constant time: no early exit that times the match
            if hmac.compare_digest(str(entry.get("sha256", "")), digest):
                found = str(entry["name"])
        return found
