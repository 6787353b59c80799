"""Benchmark: `corral bake` against `DOCKER_BUILDKIT=0 docker build` of the same context.

    .venv/bin/python bench/bake.py [--files 1000] [--megabytes 20]

The context is 1,000 files / 20 MB (seeded random bytes) copied onto the busybox base:
corral's recipe is `from: busybox` + `copy: files → /data/`; Docker's is `FROM` the same
busybox layer imported with `docker import`, then `ADD files/ /data/`. Three cases, each for
both tools in the same run: cold (empty store, no cache: `docker build --no-cache`), warm
(nothing changed) and one file changed. corral's bake is timed in-process (`bake_images`) and
its CLI wall time (`corral bake`, a fresh process) is shown beside it; both include recording
the image's SBOM (a CycloneDX document listing the 1,000 files). Three cold bakes must
give one digest; Docker's three cold image IDs are shown as they come.

Goals (corral / docker): cold <= 1.0, warm <= 0.3, one file changed <= 0.8. When no Docker
engine answers, the bench tries to start `dockerd` (and stops it after); if that fails the
Docker column is skipped with a note. Everything it creates (temp dirs, Docker images, a
dockerd it started) is removed by id at the end. The last line is one JSON object.
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
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import partial
from pathlib import Path
from typing import Any

from corral.images import bases
from corral.images.bases import BasePin
from corral.images.lockfile import lock_path, write_lock
from corral.images.recipes import bake_images
from corral.images.store import ImageStore
from corral.spec.model import ImageSpec

CORRAL = str(Path(sys.executable).parent / "corral")
RECIPE = {
    "bench": ImageSpec.model_validate(
        {"from": "busybox", "copy": [{"src": "files", "dest": "/data/"}]}
    )
}
SPEC = """\
project: bench
images:
  bench:
    from: busybox
    copy:
      - src: files
        dest: /data/
"""
GOALS = {"cold": 1.0, "warm": 0.3, "one_file": 0.8}


def make_context(root: Path, files: int, total: int) -> None:
    rng = random.Random(42)
    each = total // files
    for index in range(files):
        path = root / "files" / f"d{index % 20:02d}" / f"f{index:04d}.bin"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(rng.randbytes(each))
    (root / "corral.yaml").write_text(SPEC)
    (root / "Dockerfile").write_text("FROM corral-bench-busybox:base\nADD files/ /data/\n")


def timed(action: Callable[[], Any]) -> tuple[float, Any]:
    start = time.perf_counter()
    result = action()
    return time.perf_counter() - start, result


def fresh_store(root: Path, deb: Path) -> ImageStore:
    """An empty store holding only the pinned .deb (as Docker holds the imported base)."""
    store = ImageStore(root / "images")
    bases.import_deb(store, deb)
    return store


# -- docker ---------------------------------------------------------------------------------


def docker_ok() -> bool:
    try:
        return subprocess.run(["docker", "info"], capture_output=True, timeout=20).returncode == 0
    except (OSError, subprocess.SubprocessError):
        return False


@contextmanager
def docker_engine(note: list[str]) -> Iterator[bool]:
    """A reachable engine: the running one, or a dockerd started here (stopped after)."""
    if docker_ok():
        yield True
        return
    if shutil.which("dockerd") is None:
        note.append("no Docker engine and no dockerd (apt-get install -y docker.io): skipped")
        yield False
        return
    log = open("/var/tmp/bench-dockerd.log", "ab")  # noqa: SIM115 (closed below)
    process = subprocess.Popen(["dockerd"], stdout=log, stderr=log, start_new_session=True)
    try:
        for _ in range(100):
            if docker_ok():
                break
            time.sleep(0.2)
        else:
            note.append("dockerd did not answer within 20 s: Docker column skipped")
        yield docker_ok()
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
        log.close()


def docker_build(context: Path, tag: str, *, no_cache: bool) -> str:
    command = ["docker", "build", "-q", "-t", tag, *(["--no-cache"] if no_cache else []), "."]
    done = subprocess.run(
        command,
        cwd=context,
        env={**os.environ, "DOCKER_BUILDKIT": "0"},
        capture_output=True,
        text=True,
        timeout=600,
    )
    if done.returncode != 0:
        raise RuntimeError(f"docker build failed: {done.stderr}")
    return done.stdout.strip().splitlines()[-1]


# -- the run ---------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=1000)
    parser.add_argument("--megabytes", type=int, default=20)
    options = parser.parse_args()
    notes: list[str] = []
    figures: dict[str, Any] = {"files": options.files, "megabytes": options.megabytes}
    with tempfile.TemporaryDirectory(prefix="corral-bench-bake-") as work_dir:
        work = Path(work_dir)
        context = work / "context"
        make_context(context, options.files, options.megabytes * 1_000_000)
        seed = ImageStore(work / "seed" / "images")
        pin: BasePin = bases.resolve(seed)
        deb = bases.deb_path(seed, pin)
        write_lock(lock_path(context), {"busybox": pin})

        # corral: three cold bakes (one digest), then warm, then one file changed.
        cold_times: list[float] = []
        digests: list[str] = []
        for attempt in range(3):
            store = fresh_store(work / f"cold{attempt}", deb)
            seconds, result = timed(partial(bake_images, store, RECIPE, context))
            cold_times.append(seconds)
            digests.append(result.refs["bench"].digest)
        warm, _ = timed(lambda: bake_images(store, RECIPE, context))
        target = context / "files" / "d00" / "f0000.bin"
        original = target.read_bytes()
        target.write_bytes(b"changed" + original[7:])
        changed, after = timed(lambda: bake_images(store, RECIPE, context))
        target.write_bytes(original)
        cli_home = work / "cli-home"
        fresh_store(cli_home, deb)
        env = {**os.environ, "CORRAL_HOME": str(cli_home)}

        def cli_bake() -> None:
            subprocess.run([CORRAL, "bake"], cwd=context, env=env, check=True, capture_output=True)

        cli_cold, _ = timed(cli_bake)
        cli_warm, _ = timed(cli_bake)
        figures["corral"] = {
            "cold": min(cold_times),
            "cold_all": cold_times,
            "warm": warm,
            "one_file": changed,
            "cli_cold": cli_cold,
            "cli_warm": cli_warm,
            "digests": digests,
            "reproducible": len(set(digests)) == 1,
            "changed_digest_differs": after.refs["bench"].digest != digests[0],
        }

        # Docker: the same base layer imported, the same context.
        docker: dict[str, Any] | None = None
        with docker_engine(notes) as reachable:
            if reachable:
                docker = run_docker(seed, pin, context, target, original)
        figures["docker"] = docker

    print_table(figures, notes)
    figures["notes"] = notes
    print(json.dumps(figures))


def run_docker(
    seed: ImageStore, pin: BasePin, context: Path, target: Path, original: bytes
) -> dict[str, Any]:
    base = bases.parent(seed, pin)
    layer = seed.blobs.path(str(base.layers[0]["digest"]))
    created: list[str] = []
    try:
        subprocess.run(
            ["docker", "import", str(layer), "corral-bench-busybox:base"],
            check=True,
            capture_output=True,
            timeout=120,
        )
        created.append("corral-bench-busybox:base")
        cold_times, ids = [], []
        for _ in range(3):
            seconds, image = timed(
                lambda: docker_build(context, "corral-bench-app:latest", no_cache=True)
            )
            cold_times.append(seconds)
            ids.append(image)
        created += ids
        warm, _ = timed(lambda: docker_build(context, "corral-bench-app:latest", no_cache=False))
        target.write_bytes(b"changed" + original[7:])
        changed, image = timed(
            lambda: docker_build(context, "corral-bench-app:latest", no_cache=False)
        )
        created.append(image)
        target.write_bytes(original)
        return {
            "cold": min(cold_times),
            "cold_all": cold_times,
            "warm": warm,
            "one_file": changed,
            "image_ids": ids,
            "reproducible": len(set(ids)) == 1,
        }
    finally:
        created.append("corral-bench-app:latest")
        for ref in reversed(created):
            subprocess.run(["docker", "rmi", "-f", ref], capture_output=True, check=False)


def print_table(figures: dict[str, Any], notes: list[str]) -> None:
    corral, docker = figures["corral"], figures["docker"]
    print(f"bake of {figures['files']} files / {figures['megabytes']} MB on busybox")
    print(f"{'case':<16}{'corral s':>10}{'docker s':>10}{'ratio':>8}  goal")
    ratios = {}
    for case, goal in GOALS.items():
        mine = corral[case]
        theirs = docker[case] if docker else None
        ratio = mine / theirs if theirs else None
        ratios[case] = ratio
        shown = f"{theirs:>10.3f}" if theirs else f"{'-':>10}"
        verdict = "" if ratio is None else ("ok" if ratio <= goal else "MISSED")
        ratio_text = f"{ratio:>8.2f}" if ratio is not None else f"{'-':>8}"
        print(f"{case:<16}{mine:>10.3f}{shown}{ratio_text}  <= {goal} {verdict}")
    print(f"{'cli cold/warm':<16}{corral['cli_cold']:>10.3f}  / {corral['cli_warm']:.3f} s (wall)")
    print(
        f"corral: 3 cold bakes -> {len(set(corral['digests']))} digest(s): {corral['digests'][0]}"
    )
    if docker:
        print(f"docker: 3 cold builds -> {len(set(docker['image_ids']))} image ID(s)")
    for note in notes:
        print(f"note: {note}")
    figures["ratios"] = ratios


if __name__ == "__main__":
    main()
