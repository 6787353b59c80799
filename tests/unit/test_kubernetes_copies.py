"""The pure parts of the kubernetes driver's log copies and exec: the kubelet's stamped lines
as corral stores them, and the exit code an exec Status stands for."""

from __future__ import annotations

from corral.drivers.kubernetes_exec import exit_code
from corral.drivers.kubernetes_logs import nanos, stored_lines
from corral.logs.format import parse

KUBELET = (
    "2026-11-24T10:00:00.123456789Z first\n"
    "2026-11-24T10:00:01.000000500Z second\rwith a carriage return\n"
    "2026-11-24T10:00:02Z \n"
)


def test_the_kubelets_lines_are_stored_stamped_to_the_microsecond_as_stdout() -> None:
    data, last, raw = stored_lines(KUBELET, None)
    records = [parse(line) for line in data.decode().split("\n") if line]
    assert [(r.stamp(), r.stream, r.text) for r in records] == [
        ("2026-11-24T10:00:00.123456Z", "stdout", "first"),
        ("2026-11-24T10:00:01.000000Z", "stdout", "second\rwith a carriage return"),
        ("2026-11-24T10:00:02.000000Z", "stdout", ""),
    ]
    assert raw == "2026-11-24T10:00:02Z" and last == nanos(raw)


def test_lines_up_to_the_last_copied_microsecond_are_not_copied_again() -> None:
    after = nanos("2026-11-24T10:00:01.000000999Z")  # the file's last line, in that µs
    data, _, raw = stored_lines(KUBELET, after)
    assert [parse(line).text for line in data.decode().split("\n") if line] == [""]
    assert raw == "2026-11-24T10:00:02Z"
    newest = nanos("2026-11-24T10:00:02Z")
    assert stored_lines(KUBELET, newest) == (b"", newest, None)  # all copied: nothing


def test_an_exec_status_gives_the_commands_exit_code() -> None:
    assert exit_code({"status": "Success"}) == 0
    failed = {
        "status": "Failure",
        "reason": "NonZeroExitCode",
        "details": {"causes": [{"reason": "ExitCode", "message": "3"}]},
    }
    assert exit_code(failed) == 3
    assert exit_code({"status": "Failure", "reason": "InternalError"}) == 127  # not run
    assert exit_code(None) == 127  # the stream ended without a Status
