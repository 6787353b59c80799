"""The spec (`corral.yaml`) as pydantic models.

Only shape and value rules live here; reading YAML with positions, and the rules that look
across fields (an image a service names exists, route ports differ, copy sources exist), are
`load.py`, so each problem can point at its own line. Every model forbids unknown fields so a
typo is an error with its line, not a silently ignored key.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    WithJsonSchema,
    field_validator,
    model_validator,
)

from corral.spec.durations import Duration

NAME_PATTERN = r"^[a-z][a-z0-9-]{0,39}$"
ENV_NAME_PATTERN = r"^[A-Za-z_][A-Za-z0-9_]*$"
_NAME_HINT = "use lowercase letters, digits and '-', starting with a letter (at most 40)"


def _valid_name(value: str) -> str:
    if not re.match(NAME_PATTERN, value):
        raise ValueError(f"{value!r} is not a valid name: {_NAME_HINT}")
    return value


def _valid_env_name(value: str) -> str:
    if not re.match(ENV_NAME_PATTERN, value):
        raise ValueError(
            f"{value!r} is not a valid environment variable name: "
            "use letters, digits and '_', not starting with a digit"
        )
    return value


# Names are validated as dict *keys* (not by a validator on the whole dict) so that an error's
# location is the offending key itself, which the loader can point at.
Name = Annotated[
    str,
    AfterValidator(_valid_name),
    WithJsonSchema({"type": "string", "pattern": NAME_PATTERN}),
]
EnvName = Annotated[
    str,
    AfterValidator(_valid_env_name),
    WithJsonSchema({"type": "string", "pattern": ENV_NAME_PATTERN}),
]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


class CopyStep(_Strict):
    """Copy a file or directory (relative to the spec file) into the image."""

    src: str = Field(description="path relative to the spec file's directory")
    dest: str = Field(description="absolute path inside the image")

    @field_validator("dest")
    @classmethod
    def _absolute(cls, value: str) -> str:
        if not value.startswith("/"):
            raise ValueError(f"dest must be an absolute path inside the image, got {value!r}")
        return value


class ImageSpec(_Strict):
    """A recipe: how to bake one image. The full recipe language comes with the images issue."""

    from_: Literal["scratch"] = Field(
        default="scratch",
        alias="from",
        description="base image; `scratch` runs on the host's runtime (/usr, /lib) read-only",
    )
    copy_: list[CopyStep] = Field(default_factory=list, alias="copy")
    env: dict[EnvName, str] = Field(default_factory=dict)
    workdir: str = "/"
    cmd: list[str] = Field(default_factory=list, description="default command of instances")


class HttpCheck(_Strict):
    path: str = "/"
    status: int = Field(default=200, ge=100, le=599)

    @field_validator("path")
    @classmethod
    def _slash(cls, value: str) -> str:
        if not value.startswith("/"):
            raise ValueError(f"path must start with '/', got {value!r}")
        return value


class HealthSpec(_Strict):
    """How corral decides an instance is ready to receive traffic."""

    http: HttpCheck = Field(default_factory=HttpCheck)
    interval: Duration = 0.2
    timeout: Duration = 2.0
    healthy_threshold: int = Field(default=1, ge=1)
    start_timeout: Duration = Field(
        default=30.0, description="an instance not healthy within this is a failed start"
    )


_PERCENT = re.compile(r"^(\d{1,3})%$")
Count = Annotated[
    int | str,
    Field(description="a number of instances, or a percentage like 25%"),
    WithJsonSchema(
        {
            "anyOf": [
                {"type": "integer", "minimum": 0},
                {"type": "string", "pattern": _PERCENT.pattern},
            ]
        }
    ),
]


class RollingStrategy(_Strict):
    type: Literal["rolling"] = "rolling"
    max_surge: Count = 1
    max_unavailable: Count = 0

    # A before-validator, so a wrong type gets this one message instead of one per union arm.
    @field_validator("max_surge", "max_unavailable", mode="before")
    @classmethod
    def _count(cls, value: Any) -> int | str:
        if isinstance(value, int) and not isinstance(value, bool):
            if value < 0:
                raise ValueError(f"must be 0 or more, got {value}")
            return value
        if isinstance(value, str):
            match = _PERCENT.match(value.strip())
            if match and int(match.group(1)) <= 100:
                return value.strip()
        raise ValueError(
            f"{value!r} is neither a count (0, 1, 2, ...) nor a percentage from 0% to 100%"
        )

    @model_validator(mode="after")
    def _progress_possible(self) -> RollingStrategy:
        if resolve_count(self.max_surge, 100, round_up=True) == 0 and (
            resolve_count(self.max_unavailable, 100, round_up=False) == 0
        ):
            raise ValueError("max_surge and max_unavailable cannot both be 0: nothing could move")
        return self


def resolve_count(value: int | str, total: int, *, round_up: bool) -> int:
    """A count or percentage of `total` (surge rounds up, unavailable rounds down, as k8s)."""
    if isinstance(value, int):
        return value
    percent = int(value.rstrip("%"))
    scaled = percent * total
    return -(-scaled // 100) if round_up else scaled // 100


class RouteSpec(_Strict):
    port: int = Field(ge=1, le=65535, description="the router listens on 127.0.0.1:port")
    host: str = Field(default="127.0.0.1", description="address the router binds")


class ServiceSpec(_Strict):
    """A fleet: identical instances of one image behind one route."""

    image: str = Field(description="name of an image in `images:`")
    replicas: int = Field(default=1, ge=0, le=1000)
    command: list[str] | None = Field(default=None, description="overrides the image's cmd")
    port: int = Field(
        default=8080,
        ge=1,
        le=65535,
        description="port the app listens on; also given to it as $PORT "
        "(the local driver chooses a free host port and passes that instead)",
    )
    env: dict[EnvName, str] = Field(default_factory=dict)
    health: HealthSpec = Field(default_factory=HealthSpec)
    route: RouteSpec | None = None
    strategy: RollingStrategy = Field(default_factory=RollingStrategy)
    stop_grace: Duration = Field(default=5.0, description="SIGTERM, then SIGKILL after this")
    drain_timeout: Duration = Field(
        default=10.0, description="longest wait for in-flight requests before stopping"
    )


class Spec(_Strict):
    """The whole `corral.yaml`."""

    project: Name | None = Field(
        default=None, description="project name; defaults to the spec directory's name"
    )
    driver: Literal["local"] = "local"
    images: dict[Name, ImageSpec] = Field(default_factory=dict)
    services: dict[Name, ServiceSpec] = Field(default_factory=dict)
