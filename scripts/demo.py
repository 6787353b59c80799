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
import threading
import time
from collections import Counter
from pathlib import Path

import httpx

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


class Load:
    """A bounded load through the router: N keep-alive clients until stopped or time is up."""

    def __init__(self, url: str, *, clients: int = 4, max_seconds: float = 120.0) -> None:
        self.url = url
        self.clients = clients
        self.max_seconds = max_seconds
        self.ok = 0
        self.failed = 0
        self.versions: Counter[str] = Counter()
        self.errors: Counter[str] = Counter()
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._threads = [threading.Thread(target=self._run, daemon=True) for _ in range(clients)]

    def _run(self) -> None:
        deadline = time.monotonic() + self.max_seconds
        with httpx.Client(timeout=5.0) as client:
            while not self._stop.is_set() and time.monotonic() < deadline:
                try:
                    response = client.get(self.url)
                    good = response.status_code < 500
                    version = response.json().get("version", "?") if good else "5xx"
                    error = None if good else f"HTTP {response.status_code}"
                except (httpx.HTTPError, ValueError) as exc:
                    good, version, error = False, "error", type(exc).__name__
                with self._lock:
                    if good:
                        self.ok += 1
                        self.versions[version] += 1
                    else:
                        self.failed += 1
                        self.errors[error or "?"] += 1

    def __enter__(self) -> Load:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=10)


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
    with Load(url) as load:
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
