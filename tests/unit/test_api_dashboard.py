"""The agent's API as the dashboard reaches it over TCP: the Guard, tokens, the new endpoints.

A real Agent over the in-memory driver, router and state store; requests through httpx's
ASGITransport, whose scope looks like a TCP listener at 127.0.0.1:PORT (as uvicorn gives it).
"""

from __future__ import annotations

import stat
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from corral.agent.api import create_app
from corral.agent.controller import Agent
from corral.agent.dashboard import Guard, install
from corral.agent.dashboard.guard import over_tcp
from corral.agent.tokens import TokenStore
from corral.api_schema import FleetView, HistoryView
from corral.drivers.memory import InMemoryDriver
from corral.errors import UsageError
from corral.paths import Home
from corral.rollout.control import RolloutControl
from corral.router.memory import InMemoryRouter
from corral.state.memory import InMemoryStateStore
from corral.state.records import InstanceRecord, InstanceState, ServiceRecord

PORT = 8765
BASE = f"http://127.0.0.1:{PORT}"


def make_agent(root: Path) -> Agent:
    store = InMemoryStateStore("p/dev")
    store.get_or_create_release("web", "sha256:" + "a" * 64, "sha256:c1", {"v": 1}, "alice")
    store.get_or_create_release("web", "sha256:" + "b" * 64, "sha256:c2", {"v": 2}, "bob")
    store.put_service(ServiceRecord(name="web", current_release=2, replicas=1, route_port=None))
    store.put_instance(
        InstanceRecord(
            id="web-1", service="web", serial=1, release=2, state=InstanceState.RUNNING,
            address="127.0.0.1:4000", created_at=time.time() - 30,
        )
    )  # fmt: skip
    return Agent(
        home=Home(root),
        project="p",
        environment="dev",
        store=store,
        driver=InMemoryDriver("p", "dev"),
        router=InMemoryRouter(),
    )


def make_app(agent: Agent, **hooks: Any) -> FastAPI:
    app = create_app(agent, **hooks)
    install(app, agent)
    return app


@pytest.fixture
def agent(tmp_path: Path) -> Agent:
    return make_agent(tmp_path)


@pytest.fixture
def tokens(tmp_path: Path) -> TokenStore:
    return TokenStore.of_home(tmp_path)


@pytest.fixture
async def client(agent: Agent, tokens: TokenStore) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=Guard(make_app(agent), tokens))
    async with httpx.AsyncClient(transport=transport, base_url=BASE) as the_client:
        yield the_client


def events_of(agent: Agent, kind: str) -> list[tuple[str | None, str]]:
    return [(e.actor, e.message) for e in agent.store.list_events() if e.kind == kind]


async def test_reads_need_no_token(client: httpx.AsyncClient) -> None:
    fleet = await client.get("/v1/fleet")
    assert fleet.status_code == 200
    web = fleet.json()["services"][0]
    assert (web["name"], web["release"], web["driver"]) == ("web", "r2", "memory")
    assert web["instances"][0]["age_seconds"] >= 29
    assert (await client.get("/v1/status")).status_code == 200
    page = await client.get("/ui")
    assert page.status_code == 200 and "<title>corral</title>" in page.text
    assert (await client.get("/")).text == page.text


async def test_fleet_and_history_answer_their_declared_schemas(client: httpx.AsyncClient) -> None:
    document = (await client.get("/openapi.json")).json()
    ok = document["paths"]["/v1/fleet"]["get"]["responses"]["200"]["content"]
    assert ok["application/json"]["schema"] == {"$ref": "#/components/schemas/FleetView"}
    fleet = FleetView.model_validate_json((await client.get("/v1/fleet")).content, strict=True)
    assert fleet.services[0].driver == "memory" and fleet.services[0].instances
    releases = document["paths"]["/v1/services/{service}/releases"]["get"]["responses"]["200"]
    assert releases["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/HistoryView"
    }
    answer = (await client.get("/v1/services/web/releases")).text
    assert HistoryView.model_validate_json(answer, strict=True).current == "r2"


async def test_release_history_and_images(client: httpx.AsyncClient) -> None:
    history = (await client.get("/v1/services/web/releases")).json()
    assert history["current"] == "r2"
    assert [(r["release"], r["created_by"], r["current"]) for r in history["releases"]] == [
        ("r1", "alice", False),
        ("r2", "bob", True),
    ]
    assert (await client.get("/v1/services/nope/releases")).status_code == 404
    assert (await client.get("/v1/images")).json() == {"images": []}


async def test_an_action_without_a_token_is_refused(
    client: httpx.AsyncClient, agent: Agent
) -> None:
    agent.controls["web"] = RolloutControl(service="web")
    answer = await client.post("/v1/rollouts/web/pause", json={"who": "mallory"})
    assert answer.status_code == 401
    assert answer.headers["www-authenticate"] == "Bearer"
    assert "corral ui token create" in answer.json()["hint"]
    assert not agent.controls["web"].paused
    assert (await client.post("/v1/agent/stop")).status_code == 401
    wrong = await client.post("/v1/rollouts/web/pause", headers={"Authorization": "Bearer nope"})
    assert wrong.status_code == 401


async def test_a_valid_token_acts_and_the_event_names_it(
    client: httpx.AsyncClient, agent: Agent, tokens: TokenStore
) -> None:
    agent.controls["web"] = RolloutControl(service="web", strategy="canary")
    token = tokens.create("ci-bot")
    answer = await client.post(
        "/v1/rollouts/web/pause",
        json={"who": "someone else"},  # over TCP the token, not the body, says who acted
        headers={"Authorization": f"Bearer {token}", "Origin": BASE},
    )
    assert answer.status_code == 200, answer.text
    assert answer.json()["paused"] is True
    assert events_of(agent, "rollout.pause") == [("token:ci-bot", "web: pause by token:ci-bot")]


async def test_a_revoked_token_is_refused_at_once(
    client: httpx.AsyncClient, agent: Agent, tokens: TokenStore
) -> None:
    agent.controls["web"] = RolloutControl(service="web")
    token = tokens.create("ops")
    auth = {"Authorization": f"Bearer {token}"}
    assert (await client.post("/v1/rollouts/web/pause", json={}, headers=auth)).status_code == 200
    tokens.revoke("ops")
    assert (await client.post("/v1/rollouts/web/resume", json={}, headers=auth)).status_code == 401
    assert agent.controls["web"].paused


async def test_a_foreign_host_is_refused(client: httpx.AsyncClient) -> None:
    # DNS rebinding: evil.example resolves to 127.0.0.1, the browser still sends its name
    answer = await client.get("/v1/fleet", headers={"Host": f"evil.example:{PORT}"})
    assert answer.status_code == 421
    assert (await client.get("/ui", headers={"Host": "127.0.0.1:9999"})).status_code == 421
    assert (await client.get("/v1/fleet", headers={"Host": f"localhost:{PORT}"})).status_code == 200


async def test_a_foreign_origin_cannot_act(
    client: httpx.AsyncClient, agent: Agent, tokens: TokenStore
) -> None:
    agent.controls["web"] = RolloutControl(service="web")
    auth = {"Authorization": f"Bearer {tokens.create('ops')}"}
    for origin in ("http://evil.example", "null", f"http://127.0.0.1:{PORT + 1}"):
        answer = await client.post("/v1/rollouts/web/abort", headers={**auth, "Origin": origin})
        assert answer.status_code == 403, origin
    assert agent.controls["web"].aborted_by is None


async def test_rollback_over_tcp_needs_a_token(client: httpx.AsyncClient) -> None:
    assert (await client.post("/v1/services/web/rollback", json={})).status_code == 401


def test_the_unix_socket_is_trusted() -> None:
    assert over_tcp({"server": ("127.0.0.1", 8765)})
    assert not over_tcp({"server": ("/run/corral/api.sock", None)})


def test_tokens_are_kept_hashed_and_private(tokens: TokenStore) -> None:
    token = tokens.create("alice")
    assert token.startswith("corral_") and len(token) > 40
    text = tokens.path.read_text()
    assert token not in text and "alice" in text
    assert stat.S_IMODE(tokens.path.stat().st_mode) == 0o600
    assert tokens.verify(token) == "alice"
    assert tokens.verify(token + "x") is None
    assert [t.name for t in tokens.list()] == ["alice"]
    with pytest.raises(UsageError, match="exists already"):
        tokens.create("alice")
    with pytest.raises(UsageError, match="bad token name"):
        tokens.create("no spaces")
    tokens.revoke("alice")
    assert tokens.verify(token) is None
    with pytest.raises(UsageError, match="no token named"):
        tokens.revoke("alice")


async def test_history_says_how_each_release_ended(client: httpx.AsyncClient, agent: Agent) -> None:
    agent.store.append_event(
        "rollout.succeeded", "r1 running", service="web", data={"release": 1, "ok": True}
    )
    agent.store.append_event(
        "rollout.rolled_back",
        "r2 failed",
        service="web",
        data={"release": 2, "ok": False, "reason": "analysis failed: error rate 20%"},
    )
    history = (await client.get("/v1/services/web/releases")).json()
    ended = {r["release"]: r["ended"] for r in history["releases"]}
    assert ended == {"r1": "succeeded", "r2": "rolled back: analysis failed: error rate 20%"}
    assert all(r["ended_at"] for r in history["releases"])


async def test_logs_need_a_token_only_on_a_listener_beyond_loopback(
    client: httpx.AsyncClient, agent: Agent, tokens: TokenStore
) -> None:
    """Apps' output may hold what only operators should read: over a --ui-host beyond this
    machine, log reads need a token like actions; every other read stays open."""
    log_paths = ("/v1/logs/web", "/v1/services/web/logs")
    for path in log_paths:  # on 127.0.0.1: open, like every read
        assert (await client.get(path)).status_code == 200, path

    guarded = Guard(make_app(agent), tokens, ui_host="10.1.2.3")
    transport = httpx.ASGITransport(app=guarded)  # in process: nothing leaves this machine
    async with httpx.AsyncClient(transport=transport, base_url="http://10.1.2.3:8088") as wide:
        assert (await wide.get("/v1/status")).status_code == 200
        token = tokens.create("oncall")
        for path in log_paths:
            refused = await wide.get(path)
            assert refused.status_code == 401, path
            assert refused.json()["error"] == "Unauthorized"
            wrong = await wide.get(path, headers={"Authorization": "Bearer nope"})
            assert wrong.status_code == 401, path
            allowed = await wide.get(path, headers={"Authorization": f"Bearer {token}"})
            assert allowed.status_code == 200, (path, allowed.text)
