"""Reading a service's logs as one query (`corral logs` here, and the agent's API for a CLI
elsewhere): JSON lines kept structured, filters, the follow cursor across rotations, and who
owns the logs."""

from __future__ import annotations

import os
import socket
import time
from dataclasses import replace
from datetime import timedelta
from pathlib import Path

import httpx
import pytest

from corral.agent.controller import Agent
from corral.agent.dashboard.listen import advertised_url
from corral.agent.owner import OwnerLogs, foreign_owner
from corral.api_schema import LogRecords
from corral.errors import UsageError
from corral.logs.format import format_time
from corral.logs.query import LogQuery, Source, local_page, read
from corral.logs.structured import FieldMatch, fields_of, readable
from corral.state.records import AgentRecord, InstanceRecord, InstanceState
from tests.unit.test_api_dashboard import make_agent, make_app
from tests.unit.test_api_history import LoggingDriver
from tests.unit.test_logs import T0, line

JSON_ERROR = '{"level": "error", "msg": "db down", "req": {"status": 503}, "retry": true}'
JSON_INFO = '{"level": "info", "msg": "ready", "port": 8080}'


def write(path: Path, *lines: str) -> None:
    with path.open("a") as f:
        f.write("".join(lines))


def at(minutes: int) -> str:
    return format_time(T0 + timedelta(minutes=minutes))


# --- structured JSON lines -------------------------------------------------------------------


def test_only_a_line_that_is_one_json_object_has_fields() -> None:
    assert fields_of(JSON_INFO) == {"level": "info", "msg": "ready", "port": 8080}
    assert fields_of("  " + JSON_INFO + " ") is not None
    assert fields_of('["a", "b"]') is None  # JSON, not an object
    assert fields_of('{"level": "info", "msg": ') is None  # cut short
    assert fields_of("{curly} but text") is None
    assert fields_of("listening on port 8080") is None


def test_the_human_view_puts_level_and_message_first() -> None:
    fields = fields_of(JSON_ERROR)
    assert fields is not None
    assert readable(fields) == 'ERROR db down req={"status":503} retry=true'
    assert readable({"port": 1, "who": "a b", "empty": ""}) == 'port=1 who="a b" empty=""'
    assert readable({"message": "m", "severity": "warn"}) == "WARN m"


def test_a_field_match_reads_nested_keys_and_json_values() -> None:
    fields = fields_of(JSON_ERROR)
    assert FieldMatch.parse("level=error").matches(fields)
    assert FieldMatch.parse("req.status=503").matches(fields)
    assert FieldMatch.parse("retry=true").matches(fields)
    assert not FieldMatch.parse("req.status=200").matches(fields)
    assert not FieldMatch.parse("missing=x").matches(fields)
    assert not FieldMatch.parse("level=error").matches(None)  # a plain line has no fields
    assert FieldMatch.parse("log.level=x").matches({"log.level": "x"})  # a flat dotted key
    with pytest.raises(ValueError, match="KEY=VALUE"):
        FieldMatch.parse("level")


def test_a_bad_option_is_a_usage_error_naming_it() -> None:
    for options, said in (
        ({"fields": ["nokey"]}, "--field"),
        ({"grep": "("}, "--grep"),
        ({"since": "soon"}, "duration"),
        ({"tail": -1}, "--tail"),
    ):
        with pytest.raises(UsageError, match=said):
            LogQuery.parse("web", **options)


# --- reading -------------------------------------------------------------------------------


@pytest.fixture
def two(tmp_path: Path) -> list[Source]:
    one, other = tmp_path / "web-1.log", tmp_path / "web-2.log"
    write(one, line(T0, "stdout", "web-1 listening"), line(T0 + timedelta(minutes=2), "stderr",
          JSON_ERROR))  # fmt: skip
    write(other, line(T0 + timedelta(minutes=1), "stdout", JSON_INFO),
          line(T0 + timedelta(minutes=3), "stdout", "web-2 stopped"))  # fmt: skip
    return [Source("web-1", "r1", one), Source("web-2", "r2", other)]


def test_records_interleave_by_time_and_json_lines_carry_their_fields(two: list[Source]) -> None:
    page = read(two, LogQuery.parse("web"))
    assert [(r["instance"], r["release"], r["line"][:9]) for r in page.records] == [
        ("web-1", "r1", "web-1 lis"),
        ("web-2", "r2", '{"level":'),
        ("web-1", "r1", '{"level":'),
        ("web-2", "r2", "web-2 sto"),
    ]
    assert page.records[1] == {
        "service": "web", "instance": "web-2", "release": "r2", "time": at(1),
        "stream": "stdout", "line": JSON_INFO,
        "fields": {"level": "info", "msg": "ready", "port": 8080},
    }  # fmt: skip
    assert page.records[0]["fields"] is None
    LogRecords(service="web", records=page.records, cursor=page.cursor)  # the API's schema


def test_filters_select_before_the_tail_counts(two: list[Source]) -> None:
    def lines(**options: object) -> list[str]:
        query = LogQuery.parse("web", **options)  # type: ignore[arg-type]
        return [r["line"] for r in read(two, query).records]

    assert lines(fields=["level=error"]) == [JSON_ERROR]
    assert lines(fields=["level=info", "port=8080"]) == [JSON_INFO]
    assert lines(fields=["level=info", "port=1"]) == []
    assert lines(grep="db down") == [JSON_ERROR]  # grep reads the line as written
    assert lines(grep="listening|stopped", tail=1) == ["web-2 stopped"]
    assert lines(grep="web-", tail=1) == ["web-2 stopped"]
    assert lines(grep="listening", tail=1) == ["web-1 listening"]  # not the last line's miss
    assert lines(since=at(1), until=at(3)) == [JSON_INFO, JSON_ERROR]


def test_the_cursor_follows_new_lines_across_a_rotation_and_new_instances(
    two: list[Source], tmp_path: Path
) -> None:
    query = LogQuery.parse("web")
    first = read(two, query)
    assert read(two, query, first.cursor).records == []  # nothing new
    live = two[0].path
    write(live, line(T0 + timedelta(minutes=4), "stdout", "before rotation"))
    os.rename(live, live.with_name("web-1.log.1"))  # the collector rotates
    write(live, line(T0 + timedelta(minutes=5), "stdout", "after rotation"))
    third = tmp_path / "web-3.log"
    write(third, line(T0 + timedelta(minutes=6), "stdout", "web-3 listening"))
    grown = [*two, Source("web-3", "r2", third)]

    then = read(grown, query, first.cursor)
    assert [r["line"] for r in then.records] == [
        "before rotation",
        "after rotation",
        "web-3 listening",
    ]
    assert read(grown, query, then.cursor).records == []
    assert len(read(grown, query).records) == 7  # without a cursor: the rotated file too
    with pytest.raises(UsageError, match="cursor"):
        read(grown, query, "web-1@12")


def test_a_page_keeps_the_newest_records_and_counts_those_left_out(two: list[Source]) -> None:
    page = read(two, LogQuery.parse("web", tail=0), limit=3)
    assert page.omitted == 1 and page.records[0]["line"] == JSON_INFO


# --- through the owning agent's API ----------------------------------------------------------


@pytest.fixture
def logged_agent(tmp_path: Path, two: list[Source]) -> Agent:
    agent = make_agent(tmp_path / "home")
    agent.store.put_instance(
        InstanceRecord(
            id="web-2", service="web", serial=2, release=2, state=InstanceState.RUNNING,
            address="127.0.0.1:4001", created_at=time.time() - 20,
        )
    )  # fmt: skip
    agent.driver = LoggingDriver(tmp_path)
    return agent


async def test_the_api_answers_the_records_the_cli_prints_with_its_filters(
    logged_agent: Agent,
) -> None:
    transport = httpx.ASGITransport(app=make_app(logged_agent))
    async with httpx.AsyncClient(transport=transport, base_url="http://agent") as client:
        for query in (
            LogQuery.parse("web"),
            LogQuery.parse("web", fields=["req.status=503"], since=at(1)),
            LogQuery.parse("web", instance="web-2", grep="stop|ready", tail=1),
        ):
            answer = await client.get("/v1/services/web/logs", params=query.params())
            assert answer.status_code == 200, answer.text
            page = LogRecords.model_validate_json(answer.content)
            local = local_page(logged_agent.store, logged_agent.driver, query)
            assert [r.model_dump() for r in page.records] == local.records
            assert page.records
        bad = await client.get("/v1/services/web/logs", params={"field": "level"})
        assert bad.status_code == 422 and bad.json()["exit_code"] == 2
        tail = (await client.get("/v1/logs/web", params={"instance": "web-2"})).json()
        assert [x["fields"] for x in tail["lines"]] == [fields_of(JSON_INFO), None]  # dashboard


def owner(home: str, host: str | None = None, api: str = "") -> AgentRecord:
    return AgentRecord("ag-1", host or socket.gethostname(), 4242, home, "/s", 0.0, 0.0, api)


def test_logs_are_read_through_the_owner_only_when_it_is_another_home_or_host(
    logged_agent: Agent, tmp_path: Path
) -> None:
    store = logged_agent.store
    mine = tmp_path / "home"
    assert foreign_owner(store, mine) is None  # no agent recorded
    store.register_agent(owner(str(mine)))
    assert foreign_owner(store, mine) is None
    store.register_agent(owner(str(tmp_path / "elsewhere")))
    assert foreign_owner(store, mine) is not None
    store.register_agent(owner(str(mine), host="build-7"))
    assert foreign_owner(store, mine) is not None


def test_an_owner_without_a_reachable_api_is_named_with_what_to_do(tmp_path: Path) -> None:
    silent = owner("/srv/corral-a", host="build-7")
    with pytest.raises(UsageError) as refused:
        OwnerLogs(silent)
    said = str(refused.value) + (refused.value.hint or "")
    assert "build-7" in said and "pid 4242" in said and "/srv/corral-a" in said
    assert "--ui-port" in said and "run `corral logs` there" in said
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    reader = OwnerLogs(replace(silent, api=f"http://127.0.0.1:{port}"))
    try:
        with pytest.raises(UsageError, match=f"127.0.0.1:{port} did not answer"):
            reader.read(LogQuery.parse("web"))
    finally:
        reader.close()


def test_the_agent_advertises_its_listener_unless_it_binds_a_wildcard() -> None:
    assert advertised_url("127.0.0.1", 8765) == "http://127.0.0.1:8765"
    assert advertised_url("::1", 8765) == "http://[::1]:8765"
    assert advertised_url("build-7.lan", 80) == "http://build-7.lan:80"
    assert advertised_url("0.0.0.0", 8765) == advertised_url("[::]", 8765) == ""


def test_an_owner_that_wants_a_token_gets_the_one_in_corral_ui_token(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """An agent listening beyond loopback serves logs only with a token: the CLI sends
    CORRAL_UI_TOKEN, and a refusal says how to get one."""
    import http.server
    import threading

    seen: list[str | None] = []

    class Refusing(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            seen.append(self.headers.get("Authorization"))
            body = b'{"error": "Unauthorized", "message": "no", "hint": "", "exit_code": 2}'
            self.send_response(401)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Refusing)
    worker = threading.Thread(target=server.serve_forever, daemon=True)
    worker.start()
    owner = AgentRecord(
        "a1", "far", 1, "/srv/corral", "", 0.0, 0.0, api=f"http://127.0.0.1:{server.server_port}"
    )
    try:
        for token in (None, "tok-123"):
            if token is None:
                monkeypatch.delenv("CORRAL_UI_TOKEN", raising=False)
            else:
                monkeypatch.setenv("CORRAL_UI_TOKEN", token)
            logs = OwnerLogs(owner)
            try:
                with pytest.raises(UsageError, match="only with a token") as refused:
                    logs.read(LogQuery.parse("web"))
            finally:
                logs.close()
            assert "CORRAL_UI_TOKEN" in (refused.value.hint or "")
        assert seen == [None, "Bearer tok-123"]
    finally:
        server.shutdown()
        server.server_close()
