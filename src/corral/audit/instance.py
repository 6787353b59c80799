"""Auditing instances: their files against the image manifest, their process against the
release. It reports; it never replaces anything (the agent acts on the findings, law 8).

For the local driver an instance's files *are* its image's unpacked root
(`$CORRAL_HOME/rootfs/<hex>`), bound read-only into every instance of that image: each root is
audited once per pass and its findings are given to every instance that binds it. The process
is found through the driver's per-instance files (`launch.json`, `pid`, see drivers/local.py):
the app is the child of the sandbox's init, and /proc shows what it really runs with.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import psutil

from corral.audit.config import compare_command, compare_env
from corral.audit.keys import audit_dir, home_key
from corral.audit.manifest import compare_manifest
from corral.audit.report import Finding, InstanceFinding
from corral.audit.statcache import StatCache
from corral.audit.tree import scan, walk
from corral.drivers.local import _instance_env  # the one definition of an instance's env
from corral.drivers.protocol import ImageRuntime, LaunchSpec
from corral.errors import CorralError
from corral.images.digests import hex_of
from corral.images.model import FileEntry
from corral.images.store import ImageStore
from corral.paths import Home
from corral.state.protocol import StateStore
from corral.state.records import InstanceRecord, InstanceState, Release

# Set by bubblewrap itself (`--chdir`), not by corral: expected to be the image's workdir.
_RUNTIME_ENV = "PWD"


@dataclass(frozen=True)
class _RootAudit:
    findings: tuple[Finding, ...] = ()
    not_audited: str | None = None
    rootfs: str | None = None


class InstanceAuditor:
    """Audits the instances of one (project, environment). Keep one per agent: it holds the
    parsed manifests and the stat cache in memory, so a pass over unchanged files only
    `lstat`s them. Blocking (it hashes on threads): call it from a worker thread
    (`asyncio.to_thread`) in the agent. Not safe to call from two threads at once."""

    def __init__(
        self,
        home: Home,
        project: str,
        environment: str,
        images: ImageStore,
        *,
        workers: int | None = None,
    ) -> None:
        self.home = home
        self.project = project
        self.environment = environment
        self.images = images
        self.workers = workers
        self._key = home_key(home.root)
        cache_file = audit_dir(home.root) / f"statcache-{project}-{environment}.json"
        self.cache = StatCache(cache_file, self._key)
        self._manifests: dict[str, list[FileEntry]] = {}

    def audit(
        self, store: StateStore, *, service: str | None = None, full: bool = False
    ) -> list[InstanceFinding]:
        """Every live instance recorded in `store` (of `service`, or all), sorted by service
        and serial. Running ones are audited; pending and stopping ones are `skipped`.
        `full`: hash every file, ignoring the stat cache."""
        records = store.list_instances(service)
        releases: dict[tuple[str, int], Release | None] = {}
        for record in records:
            key = (record.service, record.release)
            if key not in releases:
                releases[key] = store.get_release(*key)
        running = [r for r in records if r.state is InstanceState.RUNNING]
        by_digest: dict[str, list[str]] = {}
        for record in running:
            release = releases[(record.service, record.release)]
            if release is not None:
                by_digest.setdefault(release.image_digest, []).append(record.id)
        roots = {digest: self._audit_root(digest, full=full) for digest in by_digest}
        self.cache.save()
        results = []
        for record in records:
            release = releases[(record.service, record.release)]
            results.append(self._instance(record, release, roots, by_digest))
        return results

    # -- one instance -----------------------------------------------------------------------

    def _instance(
        self,
        record: InstanceRecord,
        release: Release | None,
        roots: dict[str, _RootAudit],
        by_digest: dict[str, list[str]],
    ) -> InstanceFinding:
        base = InstanceFinding(
            instance_id=record.id,
            service=record.service,
            release=record.release,
            image_digest=release.image_digest if release else "",
        )
        if release is None:
            return replace(base, not_audited=(f"release r{record.release} is not recorded",))
        if record.state is not InstanceState.RUNNING:
            return replace(base, skipped=f"{record.state} (in a roll-out's hands)")
        root = roots[release.image_digest]
        config, why = self._audit_config(record, release)
        not_audited = tuple(w for w in (root.not_audited, why) if w)
        return replace(
            base,
            files=root.findings,
            config=tuple(config),
            not_audited=not_audited,
            shared_with=tuple(i for i in by_digest[release.image_digest] if i != record.id),
            rootfs=root.rootfs,
        )

    # -- files ------------------------------------------------------------------------------

    def _audit_root(self, digest: str, *, full: bool) -> _RootAudit:
        try:
            root = self.images.rootfs_root / hex_of(digest)
            expected = self._manifest(digest)
        except CorralError as exc:
            return _RootAudit(not_audited=f"files: {exc.message}")
        try:
            top = os.lstat(root)
        except OSError as exc:
            return _RootAudit(not_audited=f"files: cannot read {root} ({exc.strerror})")
        prefix = len(str(root)) + 1
        found = scan(
            ((p, st) for p, st in walk(str(root)) if p != str(root)),
            self.cache,
            full=full,
            workers=self.workers,
        )
        observed = {path[prefix:]: state for path, state in found.items()}
        findings = compare_manifest(expected, observed, owners={(top.st_uid, top.st_gid)})
        return _RootAudit(findings=tuple(findings), rootfs=str(root))

    def _manifest(self, digest: str) -> list[FileEntry]:
        if digest not in self._manifests:  # immutable: the blob is checked by its digest
            self._manifests[digest] = self.images.file_manifest(digest)
        return self._manifests[digest]

    # -- runtime config ---------------------------------------------------------------------

    def _audit_config(
        self, record: InstanceRecord, release: Release
    ) -> tuple[list[Finding], str | None]:
        """Findings, or why the config could not be audited."""
        inst_dir = self.home.instances(self.environment) / self.project / record.id
        try:
            launch = json.loads((inst_dir / "launch.json").read_text())
            pids = json.loads((inst_dir / "pid").read_text())
        except FileNotFoundError:
            return [], f"config: no local driver files in {inst_dir}"
        except (OSError, ValueError) as exc:
            return [], f"config: cannot read {inst_dir}: {exc}"
        findings: list[Finding] = []
        if launch.get("image_digest") != release.image_digest:
            findings.append(
                Finding(
                    "image",
                    "image",
                    f"launched from {launch.get('image_digest')} ≠ release {release.image_digest}",
                )
            )
        app = _app_process(pids.get("sandbox"))
        if app is None:
            return findings, "config: its process is not running"
        # What corral launched is the sandbox's own argv and environment (bwrap's, fixed at
        # its exec): the app may legitimately exec itself or a wrapper with a changed
        # environment (Python adds LC_CTYPE on re-exec), which is not drift.
        source = _launcher(pids) or app
        try:
            argv, env = _read_process(source)
        except OSError as exc:
            return findings, f"config: cannot read /proc/{source} ({exc.strerror or exc})"
        want_argv, want_env = self._expected(record, release, launch)
        presence_only = set(release.config.get("secrets") or {})
        for name, ref in (release.config.get("secrets") or {}).items():
            if isinstance(ref, dict) and ref.get("as") == "env":
                want_env.setdefault(name, "")  # injected at launch (law 5): presence only
        if source != app:
            want_env.pop(_RUNTIME_ENV, None)  # bwrap sets PWD for the app, not for itself
            if "--" in argv:
                argv = argv[argv.index("--") + 1 :]  # bwrap's options, then the command
        findings += compare_command(want_argv, argv)
        findings += compare_env(want_env, env, key=self._key, presence_only=presence_only)
        return findings, None

    def _expected(
        self, record: InstanceRecord, release: Release, launch: dict[str, Any]
    ) -> tuple[list[str], dict[str, str]]:
        info = self.images.info(release.image_digest)
        config = release.config
        command = config.get("command")
        argv = list(command) if command is not None else list(info.cmd)
        spec = LaunchSpec(
            instance_id=record.id,
            project=self.project,
            environment=self.environment,
            service=record.service,
            serial=record.serial,
            release=record.release,
            image_digest=release.image_digest,
            command=argv,
            env={str(k): str(v) for k, v in (config.get("env") or {}).items()},
            port=int(config.get("port") or 0),
        )
        runtime = ImageRuntime(rootfs=Path("/"), cmd=info.cmd, env=info.env, workdir=info.workdir)
        env = _instance_env(spec, runtime, int(launch["port"]))
        env[_RUNTIME_ENV] = info.workdir or "/"
        return argv, env


def _app_process(sandbox: Any) -> int | None:
    """The app: the (first) child of the sandbox init recorded in the pid file, if that very
    process (pid and start time) still runs."""
    if not isinstance(sandbox, dict):
        return None
    try:
        init = psutil.Process(int(sandbox["pid"]))
        if abs(init.create_time() - float(sandbox["start_time"])) >= 1e-3:
            return None  # the pid was recycled: not ours
        children = sorted(child.pid for child in init.children())
    except (psutil.Error, KeyError, TypeError, ValueError):
        return None
    return children[0] if children else None


def _launcher(pids: dict[str, Any]) -> int | None:
    """The recorded bwrap process, if that very process (pid and start time) still runs."""
    try:
        bwrap = psutil.Process(int(pids["pid"]))
        if abs(bwrap.create_time() - float(pids["start_time"])) >= 1e-3:
            return None
    except (psutil.Error, KeyError, TypeError, ValueError):
        return None
    return bwrap.pid


def _read_process(pid: int) -> tuple[list[str], dict[str, str]]:
    """argv and the environment the process was started with, from /proc."""
    argv = _nul_list(Path(f"/proc/{pid}/cmdline").read_bytes())
    env: dict[str, str] = {}
    for item in _nul_list(Path(f"/proc/{pid}/environ").read_bytes()):
        name, _, value = item.partition("=")
        env[name] = value
    return argv, env


def _nul_list(raw: bytes) -> list[str]:
    return [part.decode(errors="surrogateescape") for part in raw.split(b"\0")[:-1]]


def audit_instances(
    home: Home,
    project: str,
    environment: str,
    store: StateStore,
    *,
    images: ImageStore | None = None,
    service: str | None = None,
    full: bool = False,
    auditor: InstanceAuditor | None = None,
    driver: str = "local",
) -> list[InstanceFinding]:
    """One audit pass over the live instances of (project, environment); see InstanceAuditor
    (and DockerAuditor, for `driver="docker"`). Pass the same `auditor` each tick to keep the
    manifests and the stat cache in memory."""
    if auditor is None and driver == "docker":
        from corral.audit.docker import audit_docker  # the docker SDK is optional

        found, _ = audit_docker(
            home, project, environment, store, images=images, service=service, full=full
        )
        return found
    if auditor is None:
        auditor = InstanceAuditor(
            home, project, environment, images or ImageStore(home.images, home.rootfs)
        )
    return auditor.audit(store, service=service, full=full)
