"""pytest fixtures of the swarm lab (tests/swarm_lab.py): one real 3-node swarm per session.

`swarm_lab` is the session's lab, built on first use; `swarm` is the same lab for one test,
given back healed (every cut or killed node back and Ready) and without the services and
secrets the test left, so tests that break nodes do not leak into the next one.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import pytest

from tests.swarm_lab import LabError, SwarmLab, unavailable


@pytest.fixture(scope="session")
def swarm_lab() -> Iterator[SwarmLab]:
    why = unavailable()
    if why:
        pytest.skip(why)
    with SwarmLab(nodes=3) as lab:
        yield lab


@pytest.fixture
def swarm(swarm_lab: SwarmLab) -> Iterator[SwarmLab]:
    yield swarm_lab
    swarm_lab.heal_all()
    manager = swarm_lab.manager_node
    for kind in ("service", "secret"):
        names = manager.docker(kind, "ls", "-q").split()
        if names:
            with contextlib.suppress(LabError):  # already going: the next `ls` shows it gone
                manager.docker(kind, "rm", *names)
