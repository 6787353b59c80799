"""The README's first command: the example fleet on the embedded default, shown serving.

Copies examples/hello to a work directory, bakes, plans and applies it (3 instances behind the
router on 127.0.0.1), proves that all 3 answer through the router, changes the app to v2, shows
the plan, rolls it out under a bounded load and prints how many requests failed. The fleet is
left running; the command to remove it is printed at the end.

Environment: CORRAL_DEMO_DIR (work directory, default ./.corral-demo), CORRAL_DEMO_PORT (route
port, default 8000), CORRAL_HOME (where corral keeps its data).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import httpx

from corral.testing.load import Load

ROOT = Path(__file__).resolve().parent.parent
CORRAL = str(Path(sys.executable).parent / "corral")


def step(title: str) -> None:
    print(f"\n\033[1;36m==> {title}\033[0m", flush=True)


def corral(spec: Path, *args: str, check: bool = True) -> int:
    print(f"$ corral {' '.join(args)}", flush=True)
    code = subprocess.call([CORRAL, *args, "--file", str(spec)])
    if check and code != 0:
        raise SystemExit(f"corral {' '.join(args)} exited {code}")
    return code


def prepare(work: Path, port: int) -> Path:
    target = work / "hello"
    if target.exists():
        shutil.rmtree(target)
    shutil.copytree(ROOT / "examples" / "hello", target)
    spec = target / "corral.yaml"
    spec.write_text(spec.read_text().replace("port: 8000", f"port: {port}"))
    return spec


def main() -> int:
    work = Path(os.environ.get("CORRAL_DEMO_DIR", ROOT / ".corral-demo")).resolve()
    port = int(os.environ.get("CORRAL_DEMO_PORT", "8000"))
    spec = prepare(work, port)
    url = f"http://127.0.0.1:{port}/"

    step(f"The example fleet: {spec}")
    corral(spec, "validate")
    step("Bake its image (content-addressed: same inputs, same digest)")
    corral(spec, "bake")
    step("Plan")
    corral(spec, "plan")
    step("Apply: 3 instances behind the router on 127.0.0.1")
    corral(spec, "apply", "-m", "demo: first release")

    step(f"Serving: 30 requests through the router at {url}")
    seen: Counter[str] = Counter()
    with httpx.Client(timeout=5.0) as client:
        for _ in range(30):
            body = client.get(url, headers={"Connection": "close"}).json()
            seen[f"{body['instance']} ({body['release']}, {body['version']})"] += 1
    for who, count in sorted(seen.items()):
        print(f"  {count:3d} answered by {who}")
    if len(seen) != 3:
        print(f"expected 3 instances to answer, saw {len(seen)}")
        return 1

    step("Change the app to v2")
    (spec.parent / "app" / "VERSION").write_text("v2\n")
    corral(spec, "plan")

    step("Roll it out while a bounded load runs through the router")
    with Load(url, max_seconds=120) as load:
        time.sleep(0.5)
        code = corral(spec, "apply", "-m", "demo: v2", check=False)
        time.sleep(0.5)
    print(
        f"\nload during the roll-out: {load.ok + load.failed} requests, "
        f"\033[1m{load.failed} failed\033[0m; answered by versions {dict(load.versions)}"
    )
    if load.errors:
        print(f"errors: {dict(load.errors)}")
    corral(spec, "status")
    print(
        f"\nThe fleet keeps running at {url}\nRemove it with:  corral destroy -f {spec} "
        f"&& corral agent stop -f {spec}"
    )
    return 0 if code == 0 and load.failed == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
