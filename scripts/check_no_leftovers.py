"""Fail if any process still runs from a CORRAL_HOME (an agent or an instance).

Used by CI after `corral destroy` + `corral agent stop`: nothing corral started may be left.
"""

from __future__ import annotations

import os
import sys

import psutil


def leftovers(home: str) -> list[str]:
    found = []
    for process in psutil.process_iter(["pid", "cmdline", "environ"]):
        try:
            cmdline = " ".join(process.info["cmdline"] or [])
            environ = process.info["environ"] or {}
        except psutil.Error:
            continue
        if process.info["pid"] == os.getpid():
            continue
        if home in cmdline or (environ.get("CORRAL_HOME") == home and "corral" in cmdline):
            found.append(f"pid {process.info['pid']}: {cmdline}")
    return found


def main() -> int:
    home = sys.argv[1]
    found = leftovers(home)
    if found:
        print("processes left behind:\n  " + "\n  ".join(found))
        return 1
    print(f"no process left from {home}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
