"""Benchmark: corral's file audit against `aide --check` and the `sha256sum` floor.

    .venv/bin/python bench/audit.py [--files 10000] [--mb 200] [--rounds 3]

A tree of 10,000 files / 200 MB (most small, a hundred large) is made in a temp dir. Over it,
each round and in turn (the machine may be shared; each figure is the best round):
- floor: `find TREE -type f -print0 | xargs -0 sha256sum > /dev/null`
- aide: `aide --check` (Debian aide), sha256 only, with its own temp config and database,
  `num_workers` = CPU count
- corral cold: every file hashed (parallel, streaming) and compared with the manifest
- corral warm: a new auditor loads the stat cache from disk; stat + compare, nothing hashed
- corral stat-only: the agent's tick, the stat cache already in memory
Goals: cold <= 1.2 x floor and >= 1.4 x faster than aide; stat-only <= 0.1 s. Prints a table
and, as the very last line, one JSON object with every figure. Everything lives in a temp dir,
removed at the end.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from corral.audit.keys import home_key
from corral.audit.manifest import compare_manifest
from corral.audit.statcache import StatCache
from corral.audit.tree import FileState, scan, walk
from corral.images.model import FileEntry


def make_tree(root: Path, files: int, total: int) -> None:
    rng = random.Random(8)
    sizes = [rng.randint(1, 8192) for _ in range(files)]
    big = rng.sample(range(files), min(100, files))
    rest = max(0, total - sum(sizes))
    for i in big:
        sizes[i] += rest // len(big)
    pool = os.urandom(4 << 20)
    for i, size in enumerate(sizes):
        folder = root / f"d{i % 100:02d}" / f"e{i % 7}"
        folder.mkdir(parents=True, exist_ok=True)
        with open(folder / f"f{i}.bin", "wb") as handle:
            while size > 0:
                n = min(size, len(pool))
                start = rng.randint(0, len(pool) - n)
                handle.write(pool[start : start + n])
                size -= n


def timed(action: Callable[[], Any]) -> tuple[float, Any]:
    started = time.perf_counter()
    result = action()
    return time.perf_counter() - started, result


def observe(root: str, cache: StatCache, *, full: bool) -> dict[str, FileState]:
    prefix = len(root) + 1
    found = scan(((p, st) for p, st in walk(root) if p != root), cache, full=full)
    return {p[prefix:]: s for p, s in found.items()}


def manifest_of(observed: dict[str, FileState]) -> list[FileEntry]:
    return [
        FileEntry(path=p, type=s.type, mode=s.mode, size=s.size, sha256=s.sha256)  # type: ignore[arg-type]
        for p, s in sorted(observed.items())
    ]


def aide_setup(work: Path, tree: Path) -> list[str] | None:
    aide = shutil.which("aide")
    if aide is None:
        return None
    config = work / "aide.conf"
    config.write_text(
        f"database_in=file:{work}/aide.db\n"
        f"database_out=file:{work}/aide.db.new\n"
        "gzip_dbout=no\n"
        "report_url=stdout\n"
        f"num_workers={os.cpu_count() or 1}\n"
        "Sha = sha256\n"
        f"{tree} Sha\n"
    )
    base = [aide, f"--config={config}"]
    subprocess.run([*base, "--init"], check=True, capture_output=True)
    os.replace(work / "aide.db.new", work / "aide.db")
    return [*base, "--check"]


def run_quiet(argv: list[str], *, shell: bool = False) -> None:
    result = subprocess.run(argv if not shell else argv[0], shell=shell, capture_output=True)
    if result.returncode != 0:
        raise SystemExit(f"{argv} failed ({result.returncode}): {result.stderr[-500:]!r}")


def measure(work: Path, files: int, mb: int, rounds: int) -> dict[str, Any]:
    tree = work / "tree"
    made, _ = timed(lambda: make_tree(tree, files, mb << 20))
    time.sleep(0.2)  # the newest files leave the stat cache's racy window
    key = home_key(work / "home")
    cache_file = work / "home" / "statcache.json"
    expected = manifest_of(observe(str(tree), StatCache(None, key), full=True))
    aide = aide_setup(work, tree)
    floor_cmd = f"find {tree} -type f -print0 | xargs -0 sha256sum > /dev/null"
    best: dict[str, float] = {}
    findings = -1

    def keep(name: str, seconds: float) -> None:
        best[name] = min(seconds, best.get(name, float("inf")))

    for _ in range(rounds):
        keep("floor", timed(lambda: run_quiet([floor_cmd], shell=True))[0])
        if aide is not None:
            keep("aide", timed(lambda: run_quiet(aide))[0])

        def cold() -> int:
            cache = StatCache(cache_file, key)
            found = compare_manifest(expected, observe(str(tree), cache, full=True))
            cache.save()
            return len(found)

        def warm() -> tuple[int, StatCache]:
            cache = StatCache(cache_file, key)
            return len(compare_manifest(expected, observe(str(tree), cache, full=False))), cache

        seconds, findings = timed(cold)
        keep("cold", seconds)
        seconds, (_, warmed) = timed(warm)
        keep("warm", seconds)

        def stat_only(cache: StatCache = warmed) -> int:
            return len(compare_manifest(expected, observe(str(tree), cache, full=False)))

        keep("stat_only", timed(stat_only)[0])
    size = sum(e.size for e in expected)
    return {
        "files": sum(e.type == "file" for e in expected),
        "bytes": size,
        "tree_made_s": round(made, 2),
        "rounds": rounds,
        "findings": findings,
        "seconds": {k: round(v, 4) for k, v in best.items()},
        "cold_vs_floor": round(best["cold"] / best["floor"], 3),
        "aide_vs_cold": round(best["aide"] / best["cold"], 3) if "aide" in best else None,
        "goals": {
            "cold_le_1.2x_floor": best["cold"] <= 1.2 * best["floor"],
            "aide_ge_1.4x_cold": ("aide" in best and best["aide"] >= 1.4 * best["cold"]),
            "stat_only_le_0.1s": best["stat_only"] <= 0.1,
        },
    }


def report(figures: dict[str, Any]) -> None:
    s = figures["seconds"]
    mb = figures["bytes"] / 2**20
    rows = [
        ("find | xargs sha256sum (floor)", s["floor"]),
        ("aide --check (sha256)", s.get("aide")),
        ("corral cold (full hash)", s["cold"]),
        ("corral warm (cache from disk)", s["warm"]),
        ("corral stat-only (in memory)", s["stat_only"]),
    ]
    print(f"{figures['files']} files, {mb:.0f} MiB; best of {figures['rounds']} rounds")
    print(f"{'pass':34} {'seconds':>8} {'MiB/s':>8} {'x floor':>8}")
    for name, seconds in rows:
        if seconds is None:
            print(f"{name:34} {'(aide not installed: apt-get install aide)':>26}")
            continue
        print(f"{name:34} {seconds:8.3f} {mb / seconds:8.0f} {seconds / s['floor']:8.2f}")
    goals = figures["goals"]
    print("goals: " + ", ".join(f"{k} {'ok' if v else 'MISSED'}" for k, v in goals.items()))
    print(json.dumps(figures))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--files", type=int, default=10_000)
    parser.add_argument("--mb", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="corral-bench-audit-"))
    try:
        figures = measure(work, args.files, args.mb, max(1, args.rounds))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    report(figures)


if __name__ == "__main__":
    try:
        main()
    except KeyboardInterrupt:
        sys.exit("interrupted; the temp tree was removed")
