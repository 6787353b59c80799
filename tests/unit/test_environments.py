"""Environments: one spec, several places it runs (`corral -e NAME`), each with its own driver,
state store and driver settings; an undeclared environment is refused, never guessed."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from corral.engine import Context
from corral.errors import SpecError, UsageError, exit_code_for
from corral.paths import Home
from corral.spec.load import load_spec

SPEC = """\
project: shop
state: sqlite:///tmp/shared.db
environments:
  dev: {}
  prod:
    driver: swarm
    state: postgresql://corral@127.0.0.1/corral
    swarm:
      manager: unix:///run/docker-cnode1.sock
      node_engines: [unix:///run/docker-cnode1.sock, unix:///run/docker-cnode2.sock]
images:
  app: {from: scratch}
services:
  web: {image: app, command: [/bin/true]}
"""


def context(tmp_path: Path, environment: str, text: str = SPEC) -> Context:
    (tmp_path / "corral.yaml").write_text(text)
    return Context(
        spec_path=tmp_path / "corral.yaml",
        home=Home(tmp_path / "home"),
        environment=environment,
        state_url=None,
    )


def test_an_environment_inherits_what_it_does_not_override(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("CORRAL_STATE_URL", raising=False)
    dev = context(tmp_path, "dev")
    assert dev.spec.driver == "local"
    assert dev.state == "sqlite:///tmp/shared.db"
    assert dev.spec.driver_settings() == {}


def test_an_environment_overrides_driver_state_and_settings(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("CORRAL_STATE_URL", raising=False)
    prod = context(tmp_path, "prod")
    assert prod.spec.driver == "swarm"
    assert prod.state == "postgresql://corral@127.0.0.1/corral"
    assert prod.spec.driver_settings() == {
        "manager": "unix:///run/docker-cnode1.sock",
        "node_engines": ["unix:///run/docker-cnode1.sock", "unix:///run/docker-cnode2.sock"],
    }
    assert prod.spec.services == prod.loaded.spec.services  # the fleet is the same


def test_an_undeclared_environment_is_refused_with_the_declared_ones(tmp_path: Path) -> None:
    staging = context(tmp_path, "staging")
    with pytest.raises(UsageError) as caught:
        _ = staging.spec
    assert exit_code_for(caught.value) == 2
    assert "corral.yaml:3" in str(caught.value)  # the `environments:` line
    assert "'staging'" in str(caught.value)
    assert "dev, prod" in (caught.value.hint or "")


def test_without_environments_any_name_is_an_isolated_environment(tmp_path: Path) -> None:
    text = "project: shop\nservices: {}\n"
    assert context(tmp_path, "anything", text).spec.driver == "local"


def test_the_state_url_from_the_environment_variable_wins(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CORRAL_STATE_URL", "sqlite:///elsewhere.db")
    assert context(tmp_path, "prod").state == "sqlite:///elsewhere.db"


def test_a_typo_in_an_environment_names_its_line(tmp_path: Path) -> None:
    (tmp_path / "corral.yaml").write_text(
        textwrap.dedent(
            """\
            project: shop
            environments:
              prod:
                drivr: swarm
            """
        )
    )
    with pytest.raises(SpecError) as caught:
        load_spec(tmp_path)
    assert "corral.yaml:4" in str(caught.value)
    assert "drivr" in str(caught.value)


def test_an_unknown_driver_in_an_environment_is_a_spec_error(tmp_path: Path) -> None:
    (tmp_path / "corral.yaml").write_text("environments:\n  prod:\n    driver: nomad\n")
    with pytest.raises(SpecError) as caught:
        load_spec(tmp_path)
    assert "corral.yaml:3" in str(caught.value)
