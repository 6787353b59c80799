"""The secrets key and the cipher: AES-256-GCM (`cryptography`) under subkeys of one key.

The key is 32 random bytes, base64 in a 0600 file named by `$CORRAL_SECRETS_KEY_FILE`
(default `~/.config/corral/secrets.key`, `$XDG_CONFIG_HOME` honoured): never in the state
store, never beside the SQLite file, so a copy of the state alone reveals nothing. From it,
HKDF derives three independent subkeys: one encrypts, one makes the keyed digests a release
records (a plain hash of a short password could be reversed by guessing), one names the key
(`key_id`, stored with each version so a wrong key is a clear error, not garbage).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import os
import secrets
from dataclasses import dataclass, field
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from corral.errors import UsageError
from corral.secrets.errors import SecretKeyError

KEY_FILE_VAR = "CORRAL_SECRETS_KEY_FILE"
KEY_BYTES = 32
_NONCE_BYTES = 12
_FORMAT = "v1"  # prefix of every ciphertext, so the format can change later


def key_path() -> Path:
    named = os.environ.get(KEY_FILE_VAR)
    if named:
        return Path(named).expanduser()
    config = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(config) / "corral" / "secrets.key"


def _subkey(key: bytes, purpose: str) -> bytes:
    kdf = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=f"corral {purpose}".encode())
    return kdf.derive(key)


@dataclass(frozen=True)
class SecretKey:
    """The key in memory; its repr never shows it."""

    raw: bytes = field(repr=False)
    path: Path

    @property
    def key_id(self) -> str:
        return hmac.new(_subkey(self.raw, "key id"), b"id", hashlib.sha256).hexdigest()[:16]

    def digest(self, value: str) -> str:
        """The keyed hash a release records: shows *that* a value changed, never *what* it is."""
        mac = hmac.new(_subkey(self.raw, "digest"), value.encode(), hashlib.sha256)
        return "hmac-sha256:" + mac.hexdigest()

    def seal(self, value: str, context: str) -> str:
        """Encrypt; `context` (environment and name) is bound in, so a ciphertext copied to
        another secret does not decrypt."""
        nonce = secrets.token_bytes(_NONCE_BYTES)
        sealed = AESGCM(_subkey(self.raw, "encrypt")).encrypt(
            nonce, value.encode(), context.encode()
        )
        return f"{_FORMAT}:" + base64.b64encode(nonce + sealed).decode()

    def open(self, ciphertext: str, context: str) -> str:
        fmt, _, body = ciphertext.partition(":")
        try:
            if fmt != _FORMAT:
                raise ValueError(f"unknown format {fmt!r}")
            data = base64.b64decode(body, validate=True)
            plain = AESGCM(_subkey(self.raw, "encrypt")).decrypt(
                data[:_NONCE_BYTES], data[_NONCE_BYTES:], context.encode()
            )
            return plain.decode()
        except (InvalidTag, ValueError, binascii.Error) as exc:
            raise SecretKeyError(
                f"secret {context} does not decrypt with the key in {self.path}",
                hint="The record was sealed with another key or was altered. Use the key it "
                f"was set with (${KEY_FILE_VAR}), or set the secret again.",
            ) from exc


def _apart(path: Path | None, home: Path | None) -> Path:
    """The key file, refused when it sits in the home with the SQLite state and the images:
    a copy of that directory must not carry the key to its own secrets."""
    path = path or key_path()
    if home is not None and path.resolve().is_relative_to(home.resolve()):
        raise UsageError(
            f"the secrets key {path} is inside CORRAL_HOME ({home}), beside the state",
            hint=f"Point ${KEY_FILE_VAR} at a file outside {home}, e.g. "
            "~/.config/corral/secrets.key.",
        )
    return path


def load_key(path: Path | None = None, *, home: Path | None = None) -> SecretKey:
    """The key from its file; a missing or malformed file is a clear error."""
    path = _apart(path, home)
    try:
        text = path.read_text().strip()
    except FileNotFoundError as exc:
        raise SecretKeyError(
            f"no secrets key at {path}",
            hint="`corral secret set NAME` creates one; or point $"
            f"{KEY_FILE_VAR} at the key the secrets were set with.",
        ) from exc
    except OSError as exc:
        raise SecretKeyError(f"cannot read the secrets key {path}: {exc}") from exc
    try:
        raw = base64.b64decode(text, validate=True)
    except binascii.Error:
        raw = b""
    if len(raw) != KEY_BYTES:
        raise SecretKeyError(
            f"{path} is not a corral secrets key (expected {KEY_BYTES} bytes in base64)",
            hint=f"Point ${KEY_FILE_VAR} at the key file `corral secret set` created.",
        )
    return SecretKey(raw, path)


def load_key_if_present(path: Path | None = None, *, home: Path | None = None) -> SecretKey | None:
    path = _apart(path, home)
    return load_key(path) if path.exists() else None


def create_key(path: Path | None = None, *, home: Path | None = None) -> SecretKey:
    """The key at `path`, made (0600, in a 0700 directory) when there is none yet."""
    path = _apart(path, home)
    if path.exists():
        return load_key(path)
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:  # another process made it first: use theirs
        return load_key(path)
    with open(fd, "w") as handle:
        handle.write(base64.b64encode(secrets.token_bytes(KEY_BYTES)).decode() + "\n")
        handle.flush()
        os.fsync(handle.fileno())
    return load_key(path)
