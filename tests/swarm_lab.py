"""A real multi-node Docker Swarm on this machine: N test hosts, each a Docker engine in its own
network namespace, joined by a bridge in a namespace of its own.

    with SwarmLab(nodes=3) as lab:          # 1 manager + 2 workers, ~3 s
        lab.import_busybox("web:1")          # into every node's engine
        lab.manager                          # unix:///run/csl1a2b-node1.sock
        lab.cut(lab.nodes[2]); lab.heal(lab.nodes[2])
        lab.kill_node(lab.nodes[1])

The root namespace (where corral's agent and router run) gets an address on the lab's bridge,
so it reaches every node's address (10.203.X.N, X picked free per lab). Every name carries a
random lab id (`csl` + 4 hex), so labs never collide. What MACHINE.md found on this machine
shapes the start: `ip netns exec` remounts /sys, so a wrapper re-mounts the cgroup hierarchies
before it execs dockerd (else "Devices cgroup isn't mounted"); no IPVS, so `--iptables=false`
and host-mode publishing; each engine's processes live under the node's own freezer cgroup,
so a node loss kills the engine and its containers together.

Teardown leaves nothing: it runs on exceptions and SIGTERM, and `python -m tests.swarm_lab down`
removes a lab whose owner died (a record of every lab is kept in /run/corral-swarmlab/).
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tarfile
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from types import FrameType, TracebackType
from typing import Any

RECORDS = Path("/run/corral-swarmlab")  # one <lab>.json per lab: what `down` needs
DATA = Path("/var/lib/corral-swarmlab")  # one directory per lab: data roots, logs, wrapper
CGROUPS = Path("/sys/fs/cgroup")
FREEZER = CGROUPS / "freezer"
PREFIX = "csl"
BUSYBOX = Path("/usr/bin/busybox")
LAB_APPLETS = ("sh", "httpd", "mkdir", "echo", "printf", "cat", "sleep", "hostname", "wget")
HOST_ENGINE = "unix:///var/run/docker.sock"
API_VERSION = "1.41"  # the engine here is 20.10


class LabError(RuntimeError):
    """The lab could not be built or driven; the message says which step and why."""


def run(*args: str, timeout: float = 60, check: bool = True, **kw: Any) -> str:
    done = subprocess.run(args, capture_output=True, text=True, timeout=timeout, **kw)
    if check and done.returncode != 0:
        raise LabError(f"{' '.join(args)} failed ({done.returncode}): {done.stderr.strip()}")
    return str(done.stdout)


def unavailable() -> str | None:
    """Why a lab cannot be built here, or None when it can."""
    if os.geteuid() != 0:
        return "the swarm lab needs root (network namespaces, cgroups, dockerd)"
    for tool in ("dockerd", "docker", "ip", "unshare"):
        if shutil.which(tool) is None:
            return f"`{tool}` is missing (apt-get install docker.io iproute2 util-linux)"
    if not BUSYBOX.exists():
        return "needs Debian's busybox-static (apt-get install busybox-static)"
    if not FREEZER.is_dir():
        return "needs the cgroup v1 freezer hierarchy at /sys/fs/cgroup/freezer"
    return None


@dataclass(frozen=True)
class Node:
    lab: str
    index: int  # 1-based; node 1 is the manager
    ip: str

    @property
    def name(self) -> str:
        return f"{self.lab}-node{self.index}"

    @property
    def netns(self) -> str:
        return f"{self.lab}-n{self.index}"

    @property
    def sock(self) -> Path:
        return Path(f"/run/{self.name}.sock")

    @property
    def host(self) -> str:
        """This node's Docker API address."""
        return f"unix://{self.sock}"

    @property
    def pidfile(self) -> Path:
        return Path(f"/run/{self.name}.pid")

    @property
    def exec_root(self) -> Path:
        return Path(f"/run/{self.name}")

    @property
    def port(self) -> str:
        """This node's port on the lab bridge (in the bridge namespace)."""
        return f"n{self.index}"

    def docker(self, *args: str, timeout: float = 60, **kw: Any) -> str:
        """Run the docker CLI against this node's engine."""
        return run("docker", "-H", self.host, *args, timeout=timeout, **kw)

    def client(self, timeout: int = 30) -> Any:
        """A docker SDK client of this node's engine (close it)."""
        docker = importlib.import_module("docker")  # untyped: imported as a module object
        return docker.DockerClient(base_url=self.host, version=API_VERSION, timeout=timeout)


def _cgroup_mounts() -> list[tuple[str, str, str]]:
    """(fstype, mountpoint, options) of every cgroup hierarchy of the root namespace."""
    found = []
    for line in Path("/proc/1/mounts").read_text().splitlines():
        _, point, fstype, options = line.split()[:4]
        if fstype in ("cgroup", "cgroup2") and point.startswith(str(CGROUPS) + "/"):
            found.append((fstype, point, options))
    return found


def _wrapper(run_docker: Path) -> str:
    """The script between `ip netns exec` and dockerd (see the module docstring)."""
    lines = [
        "#!/bin/sh",
        "# $1: the node's hostname; the rest: dockerd's arguments",
        "set -e",
        'hostname "$1"; shift',
        f"mount -t tmpfs -o mode=755 cgroup {CGROUPS}",
    ]
    for fstype, point, options in _cgroup_mounts():
        lines.append(f"mkdir -p {point} && mount -t {fstype} -o {options} {fstype} {point}")
    # libnetwork leaves sockets in /run/docker/libnetwork: keep them in the lab's directory
    lines += [f"mount --bind {run_docker} /run/docker", 'exec dockerd "$@"', ""]
    return "\n".join(lines)


def _free_subnet() -> int:
    """X of a 10.203.X.0/24 no route and no other lab uses."""
    used = run("ip", "-4", "route", "show")
    taken = {int(part.split(".")[2]) for part in used.split() if part.startswith("10.203.")}
    for record in RECORDS.glob("*.json"):
        with contextlib.suppress(ValueError, KeyError, OSError):
            taken.add(int(json.loads(record.read_text())["subnet"]))
    free = [x for x in range(1, 255) if x not in taken]
    if not free:
        raise LabError("no free 10.203.X.0/24: run `python -m tests.swarm_lab down`")
    return free[secrets.randbelow(len(free))]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class SwarmLab:
    """N Docker engines in network namespaces forming one swarm (node 1 manages)."""

    def __init__(self, nodes: int = 3, managers: int = 1, heartbeat: str = "2s") -> None:
        if not 1 <= managers <= nodes:
            raise LabError(f"managers must be between 1 and nodes ({nodes}), not {managers}")
        self.id = PREFIX + secrets.token_hex(2)
        self.count = nodes
        self.manager_count = managers
        self.heartbeat = heartbeat  # Swarm's default 5s makes a lost node take ~20 s to notice
        self.subnet = 0
        self.nodes: list[Node] = []
        self.dir = DATA / self.id
        self.started = False
        self._previous_term: Any = None
        self._engines: dict[int, subprocess.Popen[bytes]] = {}  # node index → its dockerd

    # ---- addresses -------------------------------------------------------------------------

    @property
    def manager_node(self) -> Node:
        return self.nodes[0]

    @property
    def manager(self) -> str:
        """The manager's Docker API address (the driver's `swarm.manager`)."""
        return self.nodes[0].host

    @property
    def node_engines(self) -> list[str]:
        """Every node's Docker API address, manager first (the driver's `swarm.node_engines`)."""
        return [node.host for node in self.nodes]

    @property
    def node_addresses(self) -> dict[str, str]:
        """Node hostname (as Swarm reports it) → its address, reachable from the root namespace."""
        return {node.name: node.ip for node in self.nodes}

    @property
    def bridge_netns(self) -> str:
        return f"{self.id}-br"

    @property
    def root_veth(self) -> str:
        return f"{self.id}-r"

    @property
    def root_ip(self) -> str:
        """The root namespace's address on the lab bridge."""
        return f"10.203.{self.subnet}.254"

    def node(self, index: int) -> Node:
        return self.nodes[index - 1]

    # ---- life cycle ------------------------------------------------------------------------

    def __enter__(self) -> SwarmLab:
        self.up()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.down()

    def up(self) -> None:
        """Build the network, start every engine and form the swarm; on failure, undo it all."""
        why = unavailable()
        if why:
            raise LabError(why)
        reap_stale()
        self._previous_term = signal.getsignal(signal.SIGTERM)
        if self._previous_term in (signal.SIG_DFL, None):  # a SIGTERM must still run `down`
            signal.signal(signal.SIGTERM, _exit_on_term)
        try:
            RECORDS.mkdir(parents=True, exist_ok=True)
            self.subnet = _free_subnet()
            self.nodes = [
                Node(self.id, i, f"10.203.{self.subnet}.{i}") for i in range(1, self.count + 1)
            ]
            self._record()
            self.started = True
            self._network()
            for node in self.nodes:
                self._start_engine(node)
            for node in self.nodes:
                self._wait_engine(node)
            self._form_swarm()
        except BaseException:
            self.down()
            raise

    def _record(self) -> None:
        record = {"id": self.id, "owner": os.getpid(), "subnet": self.subnet, "nodes": self.count}
        (RECORDS / f"{self.id}.json").write_text(json.dumps(record))

    def _network(self) -> None:
        br = self.bridge_netns
        run("ip", "netns", "add", br)
        run("ip", "-n", br, "link", "add", "br0", "type", "bridge")
        run("ip", "-n", br, "link", "set", "br0", "up")
        run("ip", "-n", br, "link", "set", "lo", "up")
        # the root namespace's leg: its address reaches every node
        run("ip", "link", "add", self.root_veth, "type", "veth", "peer", "name", "r", "netns", br)
        run("ip", "-n", br, "link", "set", "r", "master", "br0", "up")
        run("ip", "addr", "add", f"{self.root_ip}/24", "dev", self.root_veth)
        run("ip", "link", "set", self.root_veth, "up")
        for node in self.nodes:
            ns = node.netns
            run("ip", "netns", "add", ns)
            run("ip", "-n", br, "link", "add", node.port, "type", "veth", "peer", "name", "eth0")
            run("ip", "-n", br, "link", "set", "eth0", "netns", ns)
            run("ip", "-n", br, "link", "set", node.port, "master", "br0", "up")
            run("ip", "-n", ns, "addr", "add", f"{node.ip}/24", "dev", "eth0")
            run("ip", "-n", ns, "link", "set", "eth0", "up")
            run("ip", "-n", ns, "link", "set", "lo", "up")

    def _start_engine(self, node: Node) -> None:
        home = self.dir / f"node{node.index}"
        (home / "run-docker").mkdir(parents=True, exist_ok=True)
        wrapper = home / "wrap.sh"
        wrapper.write_text(_wrapper(home / "run-docker"))
        wrapper.chmod(0o755)
        cgroup = FREEZER / node.name
        cgroup.mkdir(exist_ok=True)
        previous = self._engines.pop(node.index, None)
        if previous is not None:  # a killed engine: reaped, and its runtime state gone as at boot
            previous.wait(10)
        node.pidfile.unlink(missing_ok=True)  # a killed engine's pid file blocks its restart
        shutil.rmtree(node.exec_root, ignore_errors=True)  # else containerd's stale files stall it
        dockerd = [
            *("--data-root", str(home / "data"), "--exec-root", str(node.exec_root)),
            *("-H", node.host, "--pidfile", str(node.pidfile)),
            *("--iptables=false", "--cgroup-parent", f"/{node.name}", "--log-level", "warn"),
        ]
        # the shell joins the node's freezer cgroup first: every process after it inherits it
        launch = (
            f'echo $$ > {cgroup}/cgroup.procs && exec ip netns exec {node.netns} unshare --uts "$@"'
        )
        with open(home / "dockerd.log", "ab") as log:
            self._engines[node.index] = subprocess.Popen(
                ["sh", "-c", launch, "sh", str(wrapper), node.name, *dockerd],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                start_new_session=True,
            )

    def _wait_engine(self, node: Node, deadline: float = 60) -> None:
        until = time.monotonic() + deadline
        while time.monotonic() < until:
            if node.sock.exists():
                done = subprocess.run(
                    ["docker", "-H", node.host, "version", "-f", "{{.Server.Version}}"],
                    capture_output=True,
                    timeout=30,
                )
                if done.returncode == 0:
                    return
            if self._engines[node.index].poll() is not None:
                break
            time.sleep(0.1)
        log = (self.dir / f"node{node.index}" / "dockerd.log").read_text(errors="replace")
        raise LabError(f"{node.name}'s engine did not answer; its log ends:\n{log[-2000:]}")

    def _form_swarm(self) -> None:
        m = self.manager_node
        m.docker(
            *("swarm", "init", "--advertise-addr", m.ip, "--listen-addr", f"{m.ip}:2377"),
            *("--dispatcher-heartbeat", self.heartbeat),
        )
        tokens = {
            role: m.docker("swarm", "join-token", "-q", role).strip()
            for role in ("manager", "worker")
        }
        for node in self.nodes[1:]:
            role = "manager" if node.index <= self.manager_count else "worker"
            node.docker(
                *("swarm", "join", "--token", tokens[role], "--advertise-addr", node.ip),
                *("--listen-addr", f"{node.ip}:2377", f"{m.ip}:2377"),
            )
        self.wait_nodes_ready(self.nodes)

    def wait_nodes_ready(self, nodes: list[Node], deadline: float = 60) -> None:
        """Until the manager sees every node of `nodes` Ready (one entry of it, at least)."""
        want = {node.name for node in nodes}
        until = time.monotonic() + deadline
        entries: list[tuple[str, str, str]] = []
        while time.monotonic() < until:
            entries = self.swarm_nodes()
            ready = {name for _, name, status in entries if status == "Ready"}
            if want <= ready:
                return
            time.sleep(0.2)
        raise LabError(f"nodes not Ready after {deadline:.0f} s: {entries}")

    def swarm_nodes(self) -> list[tuple[str, str, str]]:
        """(id, hostname, status) of every entry of the manager's node list."""
        out = self.manager_node.docker(
            "node", "ls", "--format", "{{.ID}} {{.Hostname}} {{.Status}}"
        )
        return [
            (parts[0], parts[1], parts[2])
            for parts in (line.split(" ", 2) for line in out.splitlines())
            if len(parts) == 3
        ]

    def settle(self, deadline: float = 30) -> None:
        """Until the swarm's node list is exactly the lab's nodes, one entry each, all Ready.
        A node that rejoined (it left, or lost its swarm state) is a new entry: the old one
        stays Down and still counts for global services (two tasks on one node were seen), so
        it is removed by its id."""
        want = sorted(node.name for node in self.nodes)
        until = time.monotonic() + deadline
        entries: list[tuple[str, str, str]] = []
        while True:
            entries = self.swarm_nodes()
            ready = {name for _, name, status in entries if status == "Ready"}
            if sorted(name for _, name, _ in entries) == want and len(ready) == len(want):
                return
            for node_id, name, status in entries:
                if status != "Ready" and name in ready:  # a stale duplicate of a live node
                    self.manager_node.docker("node", "rm", "--force", node_id, check=False)
            if time.monotonic() > until:
                raise LabError(f"the swarm's nodes are not the lab's {want} after "
                               f"{deadline:.0f} s: {entries}")  # fmt: skip
            time.sleep(0.2)

    def down(self) -> None:
        """Remove everything of this lab; safe to call twice, and after a half-built `up`."""
        if self.started:
            self.started = False
            for engine in self._engines.values():  # one that never reached its cgroup, too
                if engine.poll() is None:
                    engine.kill()
            try:
                _teardown(self.id, [n.index for n in self.nodes] or list(range(1, self.count + 1)))
            finally:
                for engine in self._engines.values():  # killed by now: reaped, no zombie left
                    with contextlib.suppress(subprocess.TimeoutExpired):
                        engine.wait(10)
        if self._previous_term is not None:
            with contextlib.suppress(ValueError):  # not the main thread
                signal.signal(signal.SIGTERM, self._previous_term)
            self._previous_term = None

    # ---- failures --------------------------------------------------------------------------

    def cut(self, node: Node) -> None:
        """A network loss: the node's port on the bridge goes down (its processes keep running)."""
        run("ip", "-n", self.bridge_netns, "link", "set", node.port, "down")

    def kill_node(self, node: Node) -> None:
        """A node loss: every process of the node (its engine and its containers) is killed."""
        _kill_cgroup(node.name)

    def heal(self, node: Node, deadline: float = 60) -> None:
        """Bring a cut or killed node back; wait until the swarm sees it Ready again and
        lists exactly the lab's nodes (see `settle`)."""
        run("ip", "-n", self.bridge_netns, "link", "set", node.port, "up")
        if not self.processes(node):
            self._start_engine(node)
            self._wait_engine(node)
        self.wait_nodes_ready([node], deadline)
        self.settle()

    restore = heal

    def heal_all(self) -> None:
        """Bring back every node that is cut or killed; then the swarm lists exactly the lab's
        nodes, each Ready."""
        for node in self.nodes:
            if self.is_cut(node) or not self.processes(node):
                self.heal(node)
        self.settle()

    def is_cut(self, node: Node) -> bool:
        link = run("ip", "-n", self.bridge_netns, "-o", "link", "show", node.port)
        return "state DOWN" in link or "<BROADCAST,MULTICAST>" in link

    def processes(self, node: Node) -> list[int]:
        """Pids of every process of the node: engine, containerd, shims, containers."""
        return _cgroup_pids(FREEZER / node.name)

    # ---- images ----------------------------------------------------------------------------

    def load_image(self, tar: Path) -> None:
        """`docker load` a `docker save`-style archive into every node's engine."""
        for node in self.nodes:
            with open(tar, "rb") as data:
                node.docker("load", "-q", stdin=data, timeout=120)

    def load_image_from(self, ref: str, engine: str = HOST_ENGINE) -> None:
        """Copy image `ref` from another engine (default: this machine's) into every node."""
        tar = self.dir / "transfer.tar"
        self.dir.mkdir(parents=True, exist_ok=True)
        try:
            run("docker", "-H", engine, "save", "-o", str(tar), ref, timeout=120)
            self.load_image(tar)
        finally:
            tar.unlink(missing_ok=True)

    def import_busybox(self, tag: str, cmd: str = "sh", env: dict[str, str] | None = None) -> None:
        """A busybox-static image named `tag` in every node (the same image id everywhere)."""
        self.dir.mkdir(parents=True, exist_ok=True)
        rootfs = self.dir / "busybox-rootfs.tar"
        with tarfile.open(rootfs, "w") as tar:
            for name in ("bin", "tmp"):
                info = tarfile.TarInfo(name)
                info.type, info.mode = tarfile.DIRTYPE, 0o1777 if name == "tmp" else 0o755
                tar.addfile(info)
            tar.add(BUSYBOX, "bin/busybox")
            for applet in (
                "sh",
                "httpd",
                "mkdir",
                "echo",
                "printf",
                "cat",
                "sleep",
                "hostname",
                "wget",
            ):
                link = tarfile.TarInfo(f"bin/{applet}")
                link.type, link.linkname = tarfile.SYMTYPE, "busybox"
                tar.addfile(link)
        with open(rootfs, "rb") as data:
            changes = [f"CMD [{json.dumps(cmd)}]"] + [
                f"ENV {k}={v}" for k, v in (env or {}).items()
            ]
            options = [arg for change in changes for arg in ("-c", change)]
            self.manager_node.docker("import", *options, "-", tag, stdin=data, timeout=120)
        rootfs.unlink()
        if len(self.nodes) > 1:
            self.load_image_from(tag, self.manager)

    # ---- what runs -------------------------------------------------------------------------

    def endpoints(self, service: str) -> list[tuple[str, int]]:
        """(node address, host port) of every running task of `service` published in host mode."""
        client = self.manager_node.client()
        try:
            addresses = {n.id: n.attrs["Status"]["Addr"] for n in client.nodes.list()}
            found = set()
            for task in client.api.tasks(filters={"service": service}):
                status = task.get("Status", {})
                if status.get("State") != "running" or task.get("DesiredState") != "running":
                    continue
                for port in (status.get("PortStatus") or {}).get("Ports") or []:
                    # one entry per address family, both on the same port
                    found.add((addresses[task["NodeID"]], int(port["PublishedPort"])))
            return sorted(found)
        finally:
            client.close()


def _exit_on_term(signum: int, frame: FrameType | None) -> None:
    raise SystemExit(128 + signum)  # unwinds through `with SwarmLab()`, which tears down


# ---- teardown, shared with `down` for labs left by a crash -----------------------------------


def _cgroup_pids(cgroup: Path) -> list[int]:
    pids: list[int] = []
    if not cgroup.is_dir():
        return pids
    for procs in cgroup.rglob("cgroup.procs"):
        with contextlib.suppress(OSError):
            pids += [int(p) for p in procs.read_text().split()]
    return pids


def _kill_cgroup(name: str, deadline: float = 30) -> None:
    """Freeze the node's cgroup, SIGKILL every process in it, thaw: none escapes by forking."""
    cgroup = FREEZER / name
    until = time.monotonic() + deadline
    while cgroup.is_dir() and time.monotonic() < until:
        pids = _cgroup_pids(cgroup)
        if not pids:
            return
        state = cgroup / "freezer.state"
        with contextlib.suppress(OSError):
            state.write_text("FROZEN")
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        with contextlib.suppress(OSError):
            state.write_text("THAWED")
        time.sleep(0.05)
    left = _cgroup_pids(cgroup)
    if left:
        raise LabError(f"processes of {name} survived SIGKILL for {deadline:.0f} s: {left}")


def _rmdir_tree(path: Path) -> None:
    """Remove an (empty of processes) cgroup and its children, deepest first."""
    if not path.is_dir():
        return
    for child in sorted((p for p in path.rglob("*") if p.is_dir()), key=lambda p: -len(p.parts)):
        with contextlib.suppress(OSError):
            child.rmdir()
    with contextlib.suppress(OSError):
        path.rmdir()


def _teardown(lab: str, indices: list[int]) -> None:
    errors: list[str] = []
    names = [f"{lab}-node{i}" for i in indices]
    for name in names:  # first every process: nothing may hold a namespace or a mount
        try:
            _kill_cgroup(name)
        except LabError as exc:
            errors.append(str(exc))
    for name in names:  # the engines' container cgroups (--cgroup-parent) in every hierarchy
        for _, point, _ in _cgroup_mounts():
            _rmdir_tree(Path(point) / name)
    run("ip", "link", "del", f"{lab}-r", check=False)
    for ns in [f"{lab}-n{i}" for i in indices] + [f"{lab}-br"]:
        run("ip", "netns", "del", ns, check=False)
    for name in names:
        for path in (Path(f"/run/{name}.sock"), Path(f"/run/{name}.pid")):
            path.unlink(missing_ok=True)
        shutil.rmtree(f"/run/{name}", ignore_errors=True)
    shutil.rmtree(DATA / lab, ignore_errors=True)
    if (DATA / lab).exists():
        errors.append(f"{DATA / lab} could not be removed (a mount left?)")
    (RECORDS / f"{lab}.json").unlink(missing_ok=True)
    if errors:
        raise LabError("; ".join(errors))


def labs() -> list[dict[str, Any]]:
    """Every lab this machine knows of, from the records and from namespace names."""
    found: dict[str, dict[str, Any]] = {}
    for record in RECORDS.glob(f"{PREFIX}*.json"):
        with contextlib.suppress(ValueError, OSError):
            data = json.loads(record.read_text())
            found[data["id"]] = data
    # a lab whose record is gone (a crash in the middle of `down`) still has some of these
    names = [line.split()[0] for line in run("ip", "netns", "list", check=False).splitlines()]
    names += [p.name for p in DATA.glob(f"{PREFIX}*")] + [
        p.name for p in FREEZER.glob(f"{PREFIX}*")
    ]
    names += [p.name for p in Path("/run").glob(f"{PREFIX}*-node*")]
    for name in names:
        lab_id = name.split("-")[0]
        if name.startswith(PREFIX) and len(lab_id) == len(PREFIX) + 4:
            found.setdefault(lab_id, {"id": lab_id, "owner": 0})
    for lab in found.values():
        lab["alive"] = bool(lab.get("owner")) and _alive(int(lab["owner"]))
        if "nodes" not in lab:  # no record: the highest node index any trace of it names
            lab["nodes"] = max(_node_indices(str(lab["id"]), names), default=0)
    return sorted(found.values(), key=lambda lab: str(lab["id"]))


def _node_indices(lab: str, names: list[str]) -> list[int]:
    """Node indices in names like <lab>-node2, <lab>-n2, <lab>-node2.sock."""
    found = []
    for name in names:
        for marker in ("-node", "-n"):
            tail = name.removeprefix(lab + marker).split(".")[0]
            if name.startswith(lab + marker) and tail.isdigit():
                found.append(int(tail))
                break
    return found


def reap_stale() -> list[str]:
    """Tear down every lab whose owning process is gone (left by a crash or a SIGKILL)."""
    reaped = []
    for lab in labs():
        if not lab["alive"]:
            _teardown(lab["id"], list(range(1, int(lab["nodes"]) + 1)))
            reaped.append(lab["id"])
    return reaped


# ---- self-check helpers and the command line ----------------------------------------------------


def http_get(url: str, timeout: float = 5) -> str:
    with urllib.request.urlopen(url, timeout=timeout) as response:
        return str(response.read().decode())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.swarm_lab", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    up = sub.add_parser("up", help="build a lab and keep it until Ctrl-C (or `down`)")
    up.add_argument("--nodes", type=int, default=3)
    down = sub.add_parser("down", help="remove labs whose owner is gone (or the named ones)")
    down.add_argument("ids", nargs="*", help="lab ids to remove even if their owner lives")
    sub.add_parser("status", help="list the labs on this machine")
    args = parser.parse_args(argv)
    if args.command == "status":
        for known in labs():
            state = "owner alive" if known["alive"] else "owner gone (`down` removes it)"
            net = f"10.203.{known.get('subnet', '?')}.0/24"
            print(f"{known['id']}  nodes={known['nodes']}  {net}  {state}")
        return 0
    if args.command == "down":
        if args.ids:
            for known in labs():
                if known["id"] in args.ids:
                    _teardown(known["id"], list(range(1, int(known["nodes"]) + 1)))
                    print(f"removed {known['id']}")
        for reaped in reap_stale():
            print(f"removed {reaped}")
        return 0
    with SwarmLab(args.nodes) as made:
        for node in made.nodes:
            print(f"{node.name}  {node.ip}  DOCKER_HOST={node.host}")
        print(f"lab {made.id} up; Ctrl-C tears it down", flush=True)
        with contextlib.suppress(KeyboardInterrupt):
            signal.pause()
    return 0


if __name__ == "__main__":
    sys.exit(main())
