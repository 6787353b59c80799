"""Central logs: the stamped line format (and old bare lines), reading by time across
instances and rotations, retention, and the collector process itself."""

from __future__ import annotations

import os
import socket
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from corral.agent.controller import Agent
from corral.agent.logtail import service_logs
from corral.errors import UsageError
from corral.logs.format import Record, format_time, from_engine, parse, stamp
from corral.logs.forward import Target, parse_target
from corral.logs.read import Entry, Follower, in_window, interleave, parse_moment, records
from corral.logs.retention import LogPolicy, Sweeper, parse_age, parse_size, rotate, sweep
from tests.unit.test_api_dashboard import make_agent
from tests.unit.test_api_history import LoggingDriver

T0 = datetime(2026, 11, 24, 10, 0, 0, 123456, tzinfo=UTC)


def line(at: datetime, stream: str, text: str) -> str:
    return stamp(text.encode(), stream, at.timestamp()).decode()


def test_a_stamped_line_round_trips_and_an_old_bare_line_keeps_its_text() -> None:
    stored = line(T0, "stderr", "boom: a b  c")
    assert stored == "2026-11-24T10:00:00.123456Z stderr boom: a b  c\n"
    assert parse(stored[:-1]) == Record(T0, "stderr", "boom: a b  c")
    assert parse("web-1 v1 (r1) listening") == Record(None, None, "web-1 v1 (r1) listening")
    assert parse("2026-11-24T10:00:00Z stdin x").time is None  # not a stream: a bare line
    assert parse("2026-11-24T10:00:00Z stdout ").text == ""


def test_engine_logs_are_merged_by_time_with_microsecond_stamps() -> None:
    stdout = b"2026-11-24T10:00:00.300000000Z third\n2026-11-24T10:00:00.100000001Z first\n"
    stderr = b"2026-11-24T10:00:00.2Z second\n"
    merged = from_engine(stdout, stderr).decode().splitlines()
    assert merged == [
        "2026-11-24T10:00:00.100000Z stdout first",
        "2026-11-24T10:00:00.200000Z stderr second",
        "2026-11-24T10:00:00.300000Z stdout third",
    ]


def test_since_takes_a_duration_or_an_rfc3339_time() -> None:
    assert parse_moment("10m", now=T0) == T0 - timedelta(minutes=10)
    assert parse_moment("2026-11-24T10:00:00Z") == T0.replace(microsecond=0)
    assert parse_moment("2026-11-24T11:00:00+01:00") == T0.replace(microsecond=0)
    with pytest.raises(ValueError, match="neither a duration"):
        parse_moment("yesterday")


def test_a_window_is_half_open_and_leaves_out_unstamped_lines() -> None:
    inside = Record(T0, "stdout", "x")
    assert in_window(inside, T0, None) and not in_window(inside, None, T0)
    assert in_window(Record(None, None, "old"), None, None)
    assert not in_window(Record(None, None, "old"), T0, None)


def test_instances_interleave_by_time(tmp_path: Path) -> None:
    a, b = tmp_path / "a.log", tmp_path / "b.log"
    a.write_text(line(T0, "stdout", "a1") + line(T0 + timedelta(seconds=2), "stdout", "a2"))
    b.write_text(line(T0 + timedelta(seconds=1), "stderr", "b1"))
    merged = interleave(
        [[Entry("a", "r1", r) for r in records(a)], [Entry("b", "r2", r) for r in records(b)]]
    )
    assert [(e.instance, e.record.text) for e in merged] == [("a", "a1"), ("b", "b1"), ("a", "a2")]


def test_records_read_the_rotated_file_first_and_skip_a_half_written_line(tmp_path: Path) -> None:
    log = tmp_path / "web-1.log"
    log.write_text(line(T0, "stdout", "old"))
    rotate(log)
    log.write_text(line(T0, "stdout", "new") + "2026-11-24T10:00:01.000000Z stdout half")
    assert [r.text for r in records(log)] == ["old", "new"]


def test_follower_reads_on_across_a_rotation(tmp_path: Path) -> None:
    log = tmp_path / "web-1.log"
    log.write_text(line(T0, "stdout", "seen"))
    follower = Follower(log)
    follower.skip_to_end()
    with log.open("a") as f:
        f.write(line(T0, "stdout", "before rotation"))
    rotate(log)
    log.write_text(line(T0, "stdout", "after rotation"))
    assert [r.text for r in follower.poll()] == ["before rotation", "after rotation"]
    assert follower.poll() == []


def test_sizes_and_ages_parse_and_a_policy_decides_rotation() -> None:
    assert parse_size("10MB") == 10_000_000 and parse_size("512KiB") == 524_288
    assert parse_age("7d") == 7 * 86400 and parse_age("30s") == 30
    with pytest.raises(ValueError, match="not a size"):
        parse_size("ten")
    policy = LogPolicy.from_settings({"max_size": "2KB", "max_age": "1h"})
    assert (policy.max_size, policy.max_age) == (2000, 3600)
    assert not policy.should_rotate(0, 10_000, begun=0, now=10_000)  # never an empty file
    assert policy.should_rotate(1500, 600, begun=100, now=100)  # would pass max_size
    assert policy.should_rotate(10, 10, begun=100, now=3701)  # begun too long ago
    assert not policy.should_rotate(1500, 500, begun=100, now=3700)


def test_sweep_removes_only_logs_of_gone_instances_past_max_age(tmp_path: Path) -> None:
    policy = LogPolicy(max_size=10_000, max_age=3600)
    old = time.time() - 7200
    paths = {name: tmp_path / "web" / name for name in ("live.log", "gone.log", "gone.log.1")}
    paths["recent.log"] = tmp_path / "web" / "recent.log"
    for path in paths.values():
        path.parent.mkdir(exist_ok=True)
        path.write_text("x\n")
    for name in ("live.log", "gone.log", "gone.log.1"):
        os.utime(paths[name], (old, old))
    assert sweep(tmp_path, {"live"}, policy) == 2
    assert sorted(p.name for p in (tmp_path / "web").iterdir()) == ["live.log", "recent.log"]


def test_a_drivers_sweeper_sweeps_at_once_then_only_when_due(tmp_path: Path) -> None:
    """Docker and swarm call it from every observe: the first sweeps, the next wait."""
    gone = tmp_path / "web" / "gone.log"
    gone.parent.mkdir()
    gone.write_text("x\n")
    old = time.time() - 7200
    os.utime(gone, (old, old))
    sweeper = Sweeper(tmp_path, LogPolicy(max_size=10_000, max_age=3600), every=600)
    later = tmp_path / "web" / "later.log"
    assert sweeper.maybe(live=set()) == 1 and not gone.exists()
    later.write_text("x\n")
    os.utime(later, (old, old))
    assert sweeper.maybe(live=set()) == 0 and later.exists()  # not due for 600 s


def test_the_collector_stamps_both_streams_and_rotates(tmp_path: Path) -> None:
    log = tmp_path / "web-1.log"
    out_r, out_w = os.pipe()
    err_r, err_w = os.pipe()
    argv = [sys.executable, "-I", "-m", "corral.logs.collector", str(log), "1024", "3600"]
    actions = [(os.POSIX_SPAWN_DUP2, out_r, 3), (os.POSIX_SPAWN_DUP2, err_r, 4)]
    pid = os.posix_spawn(sys.executable, argv, dict(os.environ), file_actions=actions)
    try:
        os.close(out_r)
        os.close(err_r)
        before = datetime.now(UTC)
        for i in range(40):
            os.write(out_w, f"out {i:02d} {'.' * 20}\n".encode())
        os.write(err_w, b"on stderr\n")
        os.write(out_w, b"no newline at the end")
    finally:
        os.close(out_w)
        os.close(err_w)
        assert os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]) == 0
    found = list(records(log))
    assert log.with_name("web-1.log.1").exists() and log.stat().st_size <= 1024 + 64
    assert all(r.time is not None and r.time >= before for r in found)
    assert ("stderr", "on stderr") in {(r.stream, r.text) for r in found}
    assert "no newline at the end" in {r.text for r in found}  # flushed at end-of-file
    outs = [r.text for r in found if r.stream == "stdout" and r.text.startswith("out")]
    assert outs == sorted(outs) and outs[-1].startswith("out 39")  # in order, newest kept


def test_api_tail_since_keeps_only_recent_lines_with_time_and_stream(tmp_path: Path) -> None:
    agent: Agent = make_agent(tmp_path)
    logs = tmp_path / "logs"
    logs.mkdir()
    (logs / "web-1.log").write_text(
        "an old bare line\n"
        + line(T0, "stdout", "early")
        + line(T0 + timedelta(minutes=5), "stderr", "late")
    )
    driver = LoggingDriver(logs)
    since = format_time(T0 + timedelta(minutes=1))
    got = service_logs(agent.store, driver, "web", from_time=since)
    assert [(x.line, x.stream, x.time) for x in got.lines] == [
        ("late", "stderr", "2026-11-24T10:05:00.123456Z")
    ]
    every = service_logs(agent.store, driver, "web")
    assert [x.line for x in every.lines] == ["an old bare line", "early", "late"]
    with pytest.raises(UsageError, match="since"):
        service_logs(agent.store, driver, "web", from_time="soon")


def test_the_spec_logs_section_reaches_the_local_driver_and_is_checked(tmp_path: Path) -> None:
    from corral.agent.runtime import build_driver
    from corral.drivers.local import LocalDriver
    from corral.errors import SpecError
    from corral.paths import Home
    from corral.spec.load import load_spec

    spec_file = tmp_path / "corral.yaml"
    spec_file.write_text("project: p\nlogs: {max_size: 2MB, max_age: 12h}\n")
    settings = load_spec(spec_file).spec.driver_settings()
    assert settings == {"logs": {"max_size": "2MB", "max_age": "12h", "forward": None}}
    driver = build_driver(Home(tmp_path / "home"), "p", "dev", "local", settings)
    assert isinstance(driver, LocalDriver)
    assert driver.log_policy == LogPolicy(max_size=2_000_000, max_age=12 * 3600)
    spec_file.write_text("project: p\nlogs:\n  max_size: ten\n")
    with pytest.raises(SpecError, match="max_size"):
        load_spec(spec_file)


def _run_collector(log: Path, extra: list[str], lines: list[tuple[str, bytes]]) -> None:
    """The real collector process, fed `lines` (stream, bytes) through real pipes."""
    out_r, out_w = os.pipe()
    err_r, err_w = os.pipe()
    argv = [sys.executable, "-I", "-m", "corral.logs.collector", str(log), "100000", "3600"]
    actions = [(os.POSIX_SPAWN_DUP2, out_r, 3), (os.POSIX_SPAWN_DUP2, err_r, 4)]
    pid = os.posix_spawn(sys.executable, [*argv, *extra], dict(os.environ), file_actions=actions)
    try:
        os.close(out_r)
        os.close(err_r)
        for stream, data in lines:
            os.write(out_w if stream == "stdout" else err_w, data)
    finally:
        os.close(out_w)
        os.close(err_w)
        assert os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]) == 0


@pytest.mark.parametrize("transport", ["udp", "tcp"])
def test_lines_are_forwarded_to_a_syslog_server_as_rfc5424(tmp_path: Path, transport: str) -> None:
    kind = socket.SOCK_DGRAM if transport == "udp" else socket.SOCK_STREAM
    with socket.socket(socket.AF_INET, kind) as server:
        server.bind(("127.0.0.1", 0))
        server.settimeout(10)
        url = f"syslog+{transport}://127.0.0.1:{server.getsockname()[1]}"
        if transport == "tcp":
            server.listen(1)
        extra = [url, "web", "web-1", "release=r2", "project=p"]
        _run_collector(tmp_path / "web-1.log", extra, [("stdout", b"hi\n"), ("stderr", b"oh\n")])
        if transport == "udp":
            got = [server.recv(65536) for _ in range(2)]
        else:
            conn, _ = server.accept()
            with conn:
                data = b""
                while chunk := conn.recv(65536):
                    data += chunk
            got = []
            while data:  # octet counting: `LEN SP MSG`
                size, _, rest = data.partition(b" ")
                got.append(rest[: int(size)])
                data = rest[int(size) :]
    stamped = {r.text: r.stamp() for r in records(tmp_path / "web-1.log")}
    host = socket.gethostname()
    sd = '[corral@32473 release="r2" project="p"]'
    assert sorted(got) == sorted(
        [
            f"<14>1 {stamped['hi']} {host} web web-1 stdout {sd} hi".encode(),
            f"<11>1 {stamped['oh']} {host} web web-1 stderr {sd} oh".encode(),
        ]
    )


def test_an_absent_syslog_server_never_holds_the_collector_up(tmp_path: Path) -> None:
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]  # bound, never listening: connections are refused
        extra = [f"syslog+tcp://127.0.0.1:{port}", "web", "web-1"]
        _run_collector(tmp_path / "web-1.log", extra, [("stdout", b"x\n" * 1000)])
    assert len(list(records(tmp_path / "web-1.log"))) == 1000


def test_a_forward_address_must_be_syslog() -> None:
    assert parse_target("syslog://127.0.0.1:5514") == Target("udp", "127.0.0.1", 5514)
    with pytest.raises(ValueError, match="syslog://HOST:PORT"):
        parse_target("http://127.0.0.1:5514")
