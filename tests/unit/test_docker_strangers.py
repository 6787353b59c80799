"""Which listed containers are strangers: those no record of corral's holds."""

from __future__ import annotations

from corral.drivers.docker_strangers import LABEL_PREFIX, find_strangers


def _listed(cid: str, name: str, instance: str) -> dict[str, object]:
    return {
        "Id": cid,
        "Names": [f"/{name}"],
        "Labels": {LABEL_PREFIX + "service": "web", LABEL_PREFIX + "instance": instance},
        "State": "running",
        "Image": "sha256:img",
    }


def test_recorded_and_in_flight_containers_are_corrals_the_rest_are_strangers() -> None:
    listed = [
        _listed("c1", "corral-p-dev-web-web-1", "web-1"),  # recorded with its id
        _listed("c2", "corral-p-dev-web-web-2", "web-2"),  # created, id not yet recorded
        _listed("c3", "look-alike", "web-1"),  # wears the labels, no record names it
    ]
    found = find_strangers(listed, owned={"c1"}, creating={"corral-p-dev-web-web-2"})
    assert [(s.container_id, s.name, s.instance) for s in found] == [("c3", "look-alike", "web-1")]
    # without the in-flight name, a start caught between create and record is a stranger
    assert [s.container_id for s in find_strangers(listed, owned={"c1"})] == ["c2", "c3"]
