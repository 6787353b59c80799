"""load_spec: a valid spec loads with defaults resolved; every problem points at its line."""

from __future__ import annotations

import textwrap
from dataclasses import dataclass
from pathlib import Path

import pytest

from corral.errors import MissingFileError, SpecError, SpecProblem, exit_code_for
from corral.spec.load import LoadedSpec, MissingSourceError, load_spec, project_name

REPO = Path(__file__).resolve().parents[2]

# The example the product ships (examples/hello/corral.yaml), as a fixture.
HELLO = (Path(__file__).parent / "specs" / "hello.yaml").read_text()


def write_spec(directory: Path, text: str) -> Path:
    path = directory / "corral.yaml"
    path.write_text(textwrap.dedent(text))
    return path


def problems_of(path: Path) -> list[SpecProblem]:
    with pytest.raises(SpecError) as info:
        load_spec(path)
    rendered = str(info.value)
    # Users see plain words, never pydantic's or ruamel's raw dumps.
    for leak in ("Input should", "pydantic.dev", "Traceback", "For further information"):
        assert leak not in rendered
    assert info.value.file == str(path)
    assert all(p.file == str(path) for p in info.value.problems)
    return info.value.problems


@pytest.fixture
def hello(tmp_path: Path) -> Path:
    (tmp_path / "app").mkdir()
    return write_spec(tmp_path, HELLO)


def test_the_example_spec_loads_with_defaults_resolved(hello: Path) -> None:
    loaded = load_spec(hello)

    assert isinstance(loaded, LoadedSpec)
    assert loaded.path == hello and loaded.path.is_absolute()
    assert loaded.base_dir == hello.parent
    assert loaded.project == "hello"
    image = loaded.spec.images["app"]
    assert image.from_ == "scratch"
    assert [(c.src, c.dest) for c in image.copy_] == [("app/", "/app")]
    assert image.workdir == "/"
    web = loaded.spec.services["web"]
    assert (web.image, web.replicas, web.port, web.command) == ("app", 3, 8080, None)
    assert web.env == {"GREETING": "hello"}
    assert (web.health.http.path, web.health.http.status) == ("/healthz", 200)
    assert web.health.interval == pytest.approx(0.1)
    assert web.health.start_timeout == 10.0
    assert (web.health.timeout, web.health.healthy_threshold) == (2.0, 1)
    assert web.route is not None and (web.route.port, web.route.host) == (8000, "127.0.0.1")
    assert (web.strategy.type, web.strategy.max_surge, web.strategy.max_unavailable) == (
        "rolling",
        1,
        0,
    )
    assert (web.stop_grace, web.drain_timeout) == (5.0, 10.0)


def test_the_shipped_example_loads() -> None:
    example = REPO / "examples" / "hello" / "corral.yaml"
    if not example.exists():
        pytest.skip("examples/hello/corral.yaml is not written yet")
    assert load_spec(example).spec.services


def test_positions_point_back_into_the_file(hello: Path) -> None:
    loaded = load_spec(hello)

    assert loaded.position(("images", "app", "copy", 0, "src")) == (6, 14)
    assert loaded.position(("images", "app", "cmd", 1)) == (10, 31)
    assert loaded.position(("services", "web", "health", "interval")) == (20, 17)
    assert loaded.position(("services", "web", "replicas"), key=True) == (14, 5)
    # A field the file does not write (a default) has no position.
    assert loaded.position(("services", "web", "stop_grace")) is None
    assert loaded.position(("images", "app", "copy", 5)) is None


def test_a_directory_means_the_corral_yaml_inside_it(hello: Path) -> None:
    assert load_spec(hello.parent).path == hello


def test_a_relative_path_is_made_absolute(hello: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(hello.parent)
    loaded = load_spec("corral.yaml")
    assert loaded.path == hello
    assert loaded.base_dir == hello.parent


def test_project_defaults_to_the_directory_name_made_valid(tmp_path: Path) -> None:
    directory = tmp_path / "My_App 2"
    directory.mkdir()
    write_spec(directory, "services: {}\n")
    assert load_spec(directory).project == "my-app-2"
    assert project_name("42") == "corral"
    assert project_name("-x" + "y" * 60) == "x" + "y" * 39


def test_a_missing_spec_file_says_where_it_looked(tmp_path: Path) -> None:
    with pytest.raises(MissingFileError) as info:
        load_spec(tmp_path)
    assert f"no corral.yaml at {tmp_path}" in str(info.value)
    assert "--file" in str(info.value)
    assert exit_code_for(info.value) == 2


def test_a_missing_copy_source_names_its_line_and_field(tmp_path: Path) -> None:
    (tmp_path / "there").mkdir()
    path = write_spec(
        tmp_path,
        """\
        images:
          app:
            copy:
              - {src: there, dest: /a}
              - src: gone/
                dest: /b
        """,
    )
    with pytest.raises(MissingSourceError) as info:
        load_spec(path)

    assert isinstance(info.value, MissingFileError) and exit_code_for(info.value) == 2
    [problem] = info.value.problems
    assert (problem.file, problem.line, problem.column) == (str(path), 5, 14)
    assert problem.path == "images.app.copy[1].src"
    assert "'gone/' does not exist" in problem.message
    assert f"{path}:5:14: images.app.copy[1].src" in str(info.value)
    assert str(tmp_path) in str(info.value)


@dataclass
class Case:
    text: str
    line: int
    column: int
    path: str
    message: str
    hint: str | None = None


CASES = {
    "unknown field, with a suggestion": Case(
        """\
        images: {app: {}}
        services:
          web:
            image: app
            replica: 3
        """,
        5,
        5,
        "services.web.replica",
        "unknown field 'replica'",
        "did you mean 'replicas'? allowed fields: image, replicas, command",
    ),
    "a field of another strategy names the strategy's own": Case(
        """\
        images: {app: {}}
        services:
          web:
            image: app
            strategy: {type: canary, max_surge: 2, steps: [{set_weight: 50}]}
        """,
        5,
        30,
        "services.web.strategy.max_surge",
        "unknown field 'max_surge'",
        "allowed fields: type, steps, bake_window",
    ),
    "unknown top-level field": Case(
        "image: {}\n",
        1,
        1,
        "image",
        "unknown field 'image'",
        "did you mean 'images'?",
    ),
    "python name instead of the alias": Case(
        "images:\n  app:\n    from_: scratch\n",
        3,
        5,
        "images.app.from_",
        "unknown field 'from_'",
        "did you mean 'from'?",
    ),
    "wrong type": Case(
        """\
        images: {app: {}}
        services:
          web:
            image: app
            replicas: three
        """,
        5,
        15,
        "services.web.replicas",
        "expected an integer, got 'three'",
    ),
    "a boolean is not a count": Case(
        "images: {app: {}}\nservices:\n  web: {image: app, replicas: true}\n",
        3,
        31,
        "services.web.replicas",
        "expected an integer, got true",
    ),
    "negative replicas": Case(
        """\
        images: {app: {}}
        services:
          web:
            image: app
            replicas: -1
        """,
        5,
        15,
        "services.web.replicas",
        "must be at least 0, got -1",
    ),
    "bad duration": Case(
        """\
        images: {app: {}}
        services:
          web:
            image: app
            health:
              interval: fast
        """,
        6,
        17,
        "services.web.health.interval",
        "'fast' is not a duration: write it like 200ms",
    ),
    "bad percentage in strategy": Case(
        """\
        images: {app: {}}
        services:
          web:
            image: app
            strategy:
              max_surge: 150%
        """,
        6,
        18,
        "services.web.strategy.max_surge",
        "'150%' is neither a count (0, 1, 2, ...) nor a percentage from 0% to 100%",
    ),
    "max_surge and max_unavailable both 0": Case(
        """\
        images: {app: {}}
        services:
          web:
            image: app
            strategy:
              max_surge: 0
              max_unavailable: 0%
        """,
        6,
        7,
        "services.web.strategy",
        "max_surge and max_unavailable cannot both be 0",
    ),
    "image reference to an unknown image": Case(
        """\
        images:
          app: {}
          worker: {}
        services:
          web:
            image: ap
        """,
        6,
        12,
        "services.web.image",
        "no image named 'ap'",
        "did you mean 'app'? images: app, worker",
    ),
    "duplicate route ports": Case(
        """\
        images: {app: {}}
        services:
          web:
            image: app
            route: {port: 8000}
          api:
            image: app
            route:
              port: 8000
        """,
        9,
        13,
        "services.api.route.port",
        "route port 8000 is already the route port of service 'web'",
    ),
    "duplicate YAML key": Case(
        """\
        images: {app: {}}
        services:
          web:
            image: app
            replicas: 2
            replicas: 3
        """,
        6,
        5,
        "services.web.replicas",
        "duplicate key 'replicas'",
        "already set on line 5",
    ),
    "YAML syntax error: a tab": Case(
        "services:\n  web:\n\timage: app\n",
        3,
        1,
        "services.web",
        "a tab character: YAML indents with spaces only",
    ),
    "YAML syntax error: bad indentation": Case(
        "services:\n  web:\n    image: app\n   replicas: 2\n",
        4,
        4,
        "services",
        "bad indentation",
    ),
    "YAML syntax error: unclosed flow list": Case(
        "images:\n  app:\n    cmd: [a, b\n",
        4,
        1,
        "images.app.cmd[1]",
        "invalid YAML",
    ),
    "more than one document": Case(
        "services: {}\n---\nservices: {}\n",
        2,
        1,
        "",
        "more than one YAML document",
    ),
    "invalid service name": Case(
        """\
        images: {app: {}}
        services:
          Web_1:
            image: app
        """,
        3,
        3,
        "services.Web_1",
        "'Web_1' is not a valid name",
        None,
    ),
    "invalid environment variable name": Case(
        """\
        images: {app: {}}
        services:
          web:
            image: app
            env:
              GOOD: "1"
              BAD-NAME: "2"
        """,
        7,
        7,
        "services.web.env.BAD-NAME",
        "'BAD-NAME' is not a valid environment variable name",
    ),
    "an env value must be a string": Case(
        "images:\n  app:\n    env: {PORT: 8080}\n",
        3,
        17,
        "images.app.env.PORT",
        "expected a string, got 8080",
        'quote it: "8080"',
    ),
    "copy dest not absolute": Case(
        """\
        images:
          app:
            copy:
              - src: .
                dest: app
        """,
        5,
        15,
        "images.app.copy[0].dest",
        "dest must be an absolute path inside the image, got 'app'",
    ),
    "missing required field points at the mapping": Case(
        """\
        images: {app: {}}
        services:
          web:
            replicas: 2
        """,
        4,
        5,
        "services.web.image",
        "missing required field 'image'",
        "add `image:` here; name of an image in `images:`",
    ),
    "a mapping where fields are expected": Case(
        "images: {app: {}}\nservices:\n  web:\n    image: app\n    health: 5s\n",
        5,
        13,
        "services.web.health",
        "expected a mapping of fields, got '5s'",
        "fields: http, tcp, exec, interval",
    ),
    "an empty value": Case(
        "images: {app: {}}\nservices:\n  web:\n    image: app\n    stop_grace:\n",
        5,
        5,
        "services.web.stop_grace",
        "an empty value is not a duration",
    ),
    "empty file": Case("", 1, 1, "", "the spec is empty"),
    "only comments": Case("# nothing yet\n", 1, 1, "", "the spec is empty"),
    "top level is not a mapping": Case(
        "- web\n- api\n",
        1,
        1,
        "",
        "the top level must be a mapping of fields, got a list",
        "fields: project, state, driver, swarm, kubernetes, logs, environments, images, services",
    ),
}


@pytest.mark.parametrize("case", CASES.values(), ids=CASES.keys())
def test_a_bad_spec_points_at_the_problem(tmp_path: Path, case: Case) -> None:
    path = write_spec(tmp_path, case.text)

    problems = problems_of(path)

    assert len(problems) == 1, [p.render() for p in problems]
    [problem] = problems
    assert (problem.line, problem.column, problem.path) == (case.line, case.column, case.path)
    assert case.message in problem.message
    if case.hint is not None:
        assert problem.hint is not None and case.hint in problem.hint


def test_every_problem_of_a_file_is_reported_together(tmp_path: Path) -> None:
    path = write_spec(
        tmp_path,
        """\
        images:
          app:
            copy:
              - {src: app, dest: relative}
        services:
          web:
            image: nope
            replicas: many
            health: {interval: soon}
          api:
            image: app
            replica: 2
        """,
    )
    with pytest.raises(SpecError) as info:
        load_spec(path)

    found = [(p.line, p.column, p.path) for p in info.value.problems]
    assert found == [
        (4, 26, "images.app.copy[0].dest"),
        (7, 12, "services.web.image"),
        (8, 15, "services.web.replicas"),
        (9, 24, "services.web.health.interval"),
        (12, 5, "services.api.replica"),
    ]
    assert exit_code_for(info.value) == 2
    rendered = str(info.value).splitlines()
    assert rendered[0] == (
        f"{path}:4:26: images.app.copy[0].dest: "
        "dest must be an absolute path inside the image, got 'relative'"
    )
    assert "corral validate" in rendered[-1]


def test_all_duplicate_keys_are_reported(tmp_path: Path) -> None:
    path = write_spec(
        tmp_path,
        """\
        services:
          web: {image: a}
          web: {image: b, image: c}
        """,
    )
    found = [(p.line, p.column, p.path) for p in problems_of(path)]
    assert found == [(3, 3, "services.web"), (3, 19, "services.web.image")]
