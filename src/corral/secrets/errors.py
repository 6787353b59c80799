"""The secret errors, placed in corral's tree so the CLI maps them to exit codes."""

from __future__ import annotations

from corral.errors import OperationFailed, UsageError


class SecretMissing(UsageError):
    """A reference resolves to nothing, or no longer to the version a release recorded
    (exit 2: nothing was started)."""


class SecretKeyError(OperationFailed):
    """The secrets key is missing, unreadable or not the one the secrets were sealed with.
    Nothing is decrypted and nothing is overwritten."""
