"""Fixtures every test module may use."""

pytest_plugins = [
    "tests.conformance.pg_fixtures",
    "tests.swarm_fixtures",
    "tests.conformance.kube_harness",
]
