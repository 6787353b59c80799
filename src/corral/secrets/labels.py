"""How a plan names a recorded secret version: pure, so the planner can use it (no I/O)."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

SENSITIVE = "(sensitive)"
LABEL = re.compile(r"^(v\d+|#[0-9a-f]{8})$")


def version_label(ref: Any) -> str:
    """`v3` (a store version) or `#1a2b3c4d` (the start of a keyed digest, for `from: env|file`):
    both say *that* a secret changed, neither *what* it is (law 5)."""
    if not isinstance(ref, Mapping):
        return SENSITIVE
    version = ref.get("version")
    if isinstance(version, int) and not isinstance(version, bool):
        return f"v{version}"
    digest = ref.get("digest")
    if isinstance(digest, str) and re.match(r"^[a-z0-9-]+:[0-9a-f]{8,}$", digest):
        return "#" + digest.split(":", 1)[1][:8]
    return SENSITIVE
