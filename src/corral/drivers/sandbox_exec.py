"""Run a command inside a running local instance: `python -I -S sandbox_exec.py PID WORKDIR ARGV…`
with the command's environment as a JSON object on stdin.

A separate, stdlib-only program, because entering a mount namespace (setns) is refused to a
process with several threads, as the agent is. It joins the ipc, uts, pid and mount namespaces
of the instance's sandbox init (PID), takes its root, then drops every capability and sets
no-new-privileges, as bwrap's `--cap-drop ALL` did for the app: the command sees the files,
/tmp, processes and privileges the app sees, nothing more (law 1 holds for checks too). It
forks (a pid namespace applies to children only), runs ARGV with that environment (never this
program's own: the instance's LD_* or PYTHON* must not reach the host's python) and exits with
the command's status (128 + signal when killed; 127 when it cannot be run).
"""

from __future__ import annotations

import ctypes
import json
import os
import sys
import warnings  # noqa: F401  os.execvp imports it lazily, and the image root has no stdlib

_NAMESPACES = ("ipc", "uts", "pid", "mnt")  # mnt last: /proc/PID paths must still resolve
_PR_CAPBSET_DROP = 24
_PR_SET_NO_NEW_PRIVS = 38
_PR_CAP_AMBIENT = 47
_PR_CAP_AMBIENT_CLEAR_ALL = 4
_CAP_VERSION_3 = 0x20080522
_LAST_CAP = 63


class _CapHeader(ctypes.Structure):
    _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]


class _CapData(ctypes.Structure):
    _fields_ = [
        ("effective", ctypes.c_uint32),
        ("permitted", ctypes.c_uint32),
        ("inheritable", ctypes.c_uint32),
    ]


def _fail(message: str) -> None:
    sys.stderr.write(f"corral exec: {message}\n")
    sys.stderr.flush()
    os._exit(127)


def _enter(pid: int, workdir: str) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    fds = [os.open(f"/proc/{pid}/ns/{ns}", os.O_RDONLY) for ns in _NAMESPACES]
    root = os.open(f"/proc/{pid}/root", os.O_RDONLY | os.O_DIRECTORY)
    for ns, fd in zip(_NAMESPACES, fds, strict=True):
        if libc.setns(fd, 0) != 0:
            _fail(
                f"cannot enter the {ns} namespace of pid {pid}: {os.strerror(ctypes.get_errno())}"
            )
        os.close(fd)
    os.fchdir(root)
    os.chroot(".")
    os.close(root)
    try:
        os.chdir(workdir)
    except OSError:
        os.chdir("/")
    for cap in range(_LAST_CAP + 1):
        libc.prctl(_PR_CAPBSET_DROP, cap, 0, 0, 0)  # EINVAL past the kernel's last cap: fine
    libc.prctl(_PR_CAP_AMBIENT, _PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0)
    if libc.prctl(_PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0:
        _fail("cannot set no-new-privileges")
    header = _CapHeader(_CAP_VERSION_3, 0)
    data = (_CapData * 2)()
    if libc.capset(ctypes.byref(header), data) != 0:
        _fail(f"cannot drop capabilities: {os.strerror(ctypes.get_errno())}")


def main(argv: list[str]) -> None:
    if len(argv) < 3:
        _fail("usage: sandbox_exec.py PID WORKDIR ARGV...")
    pid, workdir, command = int(argv[0]), argv[1], argv[2:]
    env = json.loads(sys.stdin.read() or "{}")
    devnull = os.open("/dev/null", os.O_RDONLY)
    try:
        _enter(pid, workdir)
    except OSError as exc:
        _fail(f"cannot enter instance (pid {pid}): {exc.strerror or exc}")
    child = os.fork()
    if child == 0:
        os.dup2(devnull, 0)
        try:
            os.execvpe(command[0], command, env)
        except OSError as exc:
            _fail(f"{command[0]}: {exc.strerror or exc}")
    _, status = os.waitpid(child, 0)
    code = os.waitstatus_to_exitcode(status)
    os._exit(code if code >= 0 else 128 - code)  # killed by signal N: 128 + N, as shells say


if __name__ == "__main__":
    main(sys.argv[1:])
