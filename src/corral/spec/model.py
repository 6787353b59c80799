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
    Discriminator,
    Field,
    SerializerFunctionWrapHandler,
    Tag,
    ValidationInfo,
    WithJsonSchema,
    field_validator,
    model_serializer,
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
    mode: int | None = Field(
        default=None,
        description="permissions of the copied files, as chmod reads them (644, '0755'); "
        "directories keep 755. Default: 755 for executables, 644 for other files",
        json_schema_extra={"anyOf": [{"type": "integer"}, {"type": "string"}]},
    )
    owner: str | None = Field(
        default=None,
        pattern=r"^\d{1,6}(:\d{1,6})?$",
        description="numeric uid[:gid] of the copied files and directories (default 0:0)",
    )

    @field_validator("dest")
    @classmethod
    def _absolute(cls, value: str) -> str:
        if not value.startswith("/"):
            raise ValueError(f"dest must be an absolute path inside the image, got {value!r}")
        return value

    # chmod's reading: the digits are octal, whether YAML gave 755, 0755 or '0755'.
    @field_validator("mode", mode="before")
    @classmethod
    def _octal(cls, value: Any) -> int | None:
        if value is None:
            return None
        text = str(value).strip() if not isinstance(value, bool) else "?"
        text = text[2:] if text.lower().startswith("0o") else text
        if not text or len(text) > 5 or any(c not in "01234567" for c in text):
            raise ValueError(f"{value!r} is not a file mode: write it as chmod does, e.g. '0644'")
        mode = int(text, 8)
        if mode > 0o7777:
            raise ValueError(f"{value!r} is not a file mode (at most 7777)")
        return mode


BASE_PATTERN = (
    r"^(scratch|busybox|debian:[a-z]+|image:[a-z][a-z0-9-]{0,39}"
    r"|oci:[^@\s]+(@sha256:[0-9a-f]{64})?)$"
)


class ImageSpec(_Strict):
    """A recipe: how to bake one image.

    Steps apply in this order: the base's files, every `copy`, then every `run`. Settings left
    out (workdir, user, cmd, entrypoint) are inherited from an `image:` base."""

    from_: str = Field(
        default="scratch",
        alias="from",
        pattern=BASE_PATTERN,
        description="base: `scratch` (runs on the host's /usr, read-only), `busybox` (a tiny "
        "OS from Debian's busybox-static, pinned in corral.lock), `debian:<suite>` (a minimal "
        "Debian root made by mmdebstrap with `packages`, pinned in corral.lock), "
        "`oci:<path>[@sha256:…]` (an OCI archive or layout beside the spec, checked by digest) "
        "or `image:<name>` (another image of this spec)",
    )
    packages: list[Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9+.-]+$")]] = Field(
        default_factory=list,
        description="Debian packages installed in a `debian:<suite>` base (with their "
        "dependencies; versions and .deb sha256s pinned in corral.lock)",
    )
    copy_: list[CopyStep] = Field(default_factory=list, alias="copy")
    run: list[str] = Field(
        default_factory=list,
        description="shell steps run with /bin/sh inside the image's own root (no network)",
    )
    env: dict[EnvName, str] = Field(default_factory=dict)
    workdir: str = Field(default="/", description="when left out: the `image:` base's, else /")
    user: str | None = Field(default=None, description="user instances run as (uid[:gid])")
    cmd: list[str] = Field(default_factory=list, description="default command of instances")
    entrypoint: list[str] = Field(default_factory=list, description="runs before cmd")
    expose: list[Annotated[int, Field(ge=1, le=65535)]] = Field(default_factory=list)
    labels: dict[str, str] = Field(default_factory=dict)
    epoch: int = Field(
        default=0,
        ge=0,
        le=8**11 - 1,
        description="the timestamp of every file and of the config (seconds since 1970); "
        "never the build time",
    )

    @property
    def base_image(self) -> str | None:
        """The name of the spec image this one is layered on, if any."""
        return self.from_.removeprefix("image:") if self.from_.startswith("image:") else None


class HttpCheck(_Strict):
    path: str = "/"
    status: int = Field(default=200, ge=100, le=599)

    @field_validator("path")
    @classmethod
    def _slash(cls, value: str) -> str:
        if not value.startswith("/"):
            raise ValueError(f"path must start with '/', got {value!r}")
        return value


def _one_check_kind(model: ProbeSpec | HealthSpec, *, http_default: bool) -> None:
    """Exactly one of http / tcp / exec (the readiness check's http is its default kind)."""
    given = [
        kind
        for kind, on in (
            ("http", "http" in model.model_fields_set and model.http is not None),
            ("tcp", model.tcp),
            ("exec", model.exec_ is not None),
        )
        if on
    ]
    if len(given) > 1 or (not given and not http_default):
        raise ValueError(
            "a check is exactly one of `http:`, `tcp: true` or `exec: [argv...]`"
            + (f" (got {' and '.join(given)})" if given else " (got none)")
        )


ExecArgv = Annotated[
    list[Annotated[str, Field(min_length=1)]],
    Field(
        min_length=1,
        description="a command run inside the instance (no shell: write [sh, -c, '...'] for "
        "one); exit code 0 passes. Needs a driver that can exec (local, docker)",
    ),
]


class ProbeSpec(_Strict):
    """A `startup:` or `liveness:` check: exactly one of http / tcp / exec, probed by the
    agent every `interval`; it fails after `failure_threshold` failures in a row (one pass is
    a success, as in Kubernetes)."""

    http: HttpCheck | None = None
    tcp: bool = Field(default=False, description="passes when the port accepts a connection")
    exec_: ExecArgv | None = Field(default=None, alias="exec")
    interval: Duration = Field(default=1.0, gt=0)
    timeout: Duration = Field(default=1.0, gt=0)
    failure_threshold: int = Field(default=3, ge=1)

    @model_validator(mode="after")
    def _one_kind(self) -> ProbeSpec:
        _one_check_kind(self, http_default=False)
        return self


class HealthSpec(_Strict):
    """How corral judges an instance. The check itself (http, the default; tcp; or exec) is
    readiness: an instance gets traffic once it passes. `startup:` and `liveness:` are
    optional checks of their own, as in Kubernetes: startup gates readiness and liveness
    (neither is judged before it passes); liveness failing `failure_threshold` times in a row
    makes the instance dead, replaced from its release. Without `liveness:`, readiness failing
    `failure_threshold` times in a row after the start does that."""

    http: HttpCheck = Field(default_factory=HttpCheck)
    tcp: bool = Field(
        default=False, description="ready when the port accepts a connection (instead of http)"
    )
    exec_: ExecArgv | None = Field(
        default=None, alias="exec", description="ready when this command exits 0 (instead of http)"
    )
    interval: Duration = 0.2
    timeout: Duration = 2.0
    healthy_threshold: int = Field(default=1, ge=1)
    failure_threshold: int = Field(
        default=3,
        ge=1,
        description="failures in a row, once started, that take an instance out of routing "
        "(with `liveness:`; it comes back after healthy_threshold passes) or make it dead "
        "(without)",
    )
    start_timeout: Duration = Field(
        default=30.0,
        description="an instance not ready within this is a failed start; with `startup:`, "
        "counted from when startup passed",
    )
    startup: ProbeSpec | None = Field(
        default=None,
        description="a slow starter's check: readiness and liveness wait until it passes; "
        "failure_threshold failures in a row are a failed start (allow failure_threshold x "
        "interval, as in Kubernetes)",
    )
    liveness: ProbeSpec | None = Field(
        default=None,
        description="judged once started: failure_threshold failures in a row make the "
        "instance dead, and it is replaced (reason `liveness`)",
    )

    @model_validator(mode="after")
    def _one_kind(self) -> HealthSpec:
        _one_check_kind(self, http_default=True)
        return self


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


class PrometheusQueries(_Strict):
    """PromQL templates; `$service`, `$release` and `$window` (e.g. `10000ms`) are filled in."""

    requests: str | None = Field(default=None, description="requests in the window")
    error_rate: str | None = Field(default=None, description="failed / all requests, 0..1")
    p99_ms: str | None = Field(default=None, description="99th percentile latency in ms")


class AnalysisSpec(_Strict):
    """Judge a release by the router's figures for it over a window (issue: roll-outs)."""

    window: Duration = Field(default=10.0, description="how long each analysis looks")
    max_error_rate: float = Field(
        default=0.01, ge=0, le=1, description="5xx (backend or router) / requests"
    )
    max_p99_ms: float | None = Field(default=None, gt=0, description="p99 latency ceiling")
    min_requests: int = Field(
        default=20, ge=0, description="fewer requests in the window: inconclusive"
    )
    inconclusive: Literal["pause", "proceed"] = Field(
        default="pause", description="what a window with too few requests does"
    )
    compare_to_stable: bool = Field(
        default=False,
        description="also fail when the error rate exceeds the old release's by max_error_rate",
    )
    provider: Literal["router", "prometheus"] = Field(
        default="router",
        description="where the figures come from: the embedded router's counters, or a "
        "Prometheus server (`url:`) that scrapes the agent's /metrics",
    )
    url: str | None = Field(default=None, description="Prometheus' base URL (provider: prometheus)")
    queries: PrometheusQueries | None = Field(
        default=None, description="PromQL templates (provider: prometheus); default: corral's own"
    )

    @model_validator(mode="after")
    def _provider_url(self) -> AnalysisSpec:
        if self.provider == "prometheus" and not self.url:
            raise ValueError("provider: prometheus needs `url:` (e.g. http://127.0.0.1:9090)")
        if self.provider != "prometheus" and (self.url or self.queries):
            raise ValueError("`url:` and `queries:` need `provider: prometheus`")
        return self

    # The provider fields appear in a dump only when set, so settings recorded before they
    # existed (and their plans and fingerprints) stay the same.
    @model_serializer(mode="wrap")
    def _only_when_set(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        data: dict[str, Any] = handler(self)
        if data.get("provider") == "router":
            del data["provider"]
        for key in ("url", "queries"):
            if data.get(key) is None:
                data.pop(key, None)
        return data


class PauseSpec(_Strict):
    duration: Duration | None = Field(
        default=None, description="absent: wait for `corral rollout promote`"
    )


class CanaryStep(_Strict):
    """One step of a canary: exactly one of set_weight, pause, analysis."""

    set_weight: int | None = Field(default=None, ge=0, le=100)
    pause: PauseSpec | None = None
    analysis: AnalysisSpec | None = None

    @model_validator(mode="after")
    def _one_kind(self) -> CanaryStep:
        given = [k for k in ("set_weight", "pause", "analysis") if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError(
                "a canary step is exactly one of set_weight, pause or analysis"
                + (f" (got {', '.join(given)})" if given else "")
            )
        return self


class CanaryStrategy(_Strict):
    type: Literal["canary"] = "canary"
    steps: list[CanaryStep] = Field(min_length=1)
    bake_window: Duration = Field(
        default=0.0, description="after full promotion, analysis goes on this long"
    )
    analysis: AnalysisSpec = Field(
        default_factory=AnalysisSpec, description="thresholds of the bake window"
    )
    progress_deadline: Duration = 600.0


class BlueGreenStrategy(_Strict):
    type: Literal["blue_green"] = "blue_green"
    preview_port: int | None = Field(
        default=None, ge=1, le=65535, description="a route serving only the new set"
    )
    auto_promote_after: Duration | None = Field(
        default=None, description="absent: wait for `corral rollout promote`"
    )
    scale_down_delay: Duration = Field(
        default=30.0, description="the old set stays up this long so a rollback is instant"
    )
    bake_window: Duration = 0.0
    analysis: AnalysisSpec = Field(default_factory=AnalysisSpec)
    progress_deadline: Duration = 600.0


class RollingStrategy(_Strict):
    type: Literal["rolling"] = "rolling"
    max_surge: Count = 1
    max_unavailable: Count = 0
    min_ready_seconds: Duration = Field(
        default=0.0, description="a new instance must stay ready this long to count"
    )
    progress_deadline: Duration = 600.0
    bake_window: Duration = 0.0
    analysis: AnalysisSpec = Field(default_factory=AnalysisSpec)

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


def _strategy_kind(value: Any) -> str:
    """`type:` may be left out: a strategy without one is rolling."""
    if isinstance(value, dict):
        return str(value.get("type", "rolling"))
    return str(getattr(value, "type", "rolling"))


Strategy = Annotated[
    Annotated[RollingStrategy, Tag("rolling")]
    | Annotated[BlueGreenStrategy, Tag("blue_green")]
    | Annotated[CanaryStrategy, Tag("canary")],
    Discriminator(_strategy_kind),
]


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


# Paths a volume may not cover: the runtime's own mounts, and where secrets are handed over.
RESERVED_MOUNT_PATHS = ("/proc", "/dev", "/tmp", "/run/secrets")


class VolumeSpec(_Strict):
    """Persistent data that outlives every instance and release (law 4)."""

    name: Name = Field(description="the volume's name, unique per service")
    path: str = Field(description="absolute mount path inside the instance (read-write)")
    single_writer: bool = Field(
        default=False,
        description="only one instance may mount it at a time: handed over stop-first",
    )
    per_instance: bool = Field(
        default=False,
        description="one volume per instance serial, following the serial across replacements",
    )

    @field_validator("path")
    @classmethod
    def _mount_path(cls, value: str) -> str:
        if not value.startswith("/") or value.rstrip("/") == "":
            raise ValueError(f"path must be an absolute path other than /, got {value!r}")
        parts = value.strip("/").split("/")
        if any(part in ("", ".", "..") for part in parts):
            raise ValueError(f"path must be a plain absolute path (no //, . or ..), got {value!r}")
        # overlaps with runtime paths, secrets' files and other volumes: volumes.check_mount_paths
        return "/" + "/".join(parts)


class SecretRef(_Strict):
    """Where a secret's value comes from and how the instance gets it; never the value."""

    from_: Literal["store", "env", "file"] = Field(
        default="store",
        alias="from",
        description="`store` (`corral secret set`), `env` (a variable of corral's and the "
        "agent's environment) or `file` (a file on this host)",
    )
    key: str | None = Field(
        default=None,
        description="the store's secret name or the variable (default: this secret's name); "
        "for `from: file`, the path (relative to the spec file)",
    )
    as_: Literal["file", "env"] = Field(
        default="file",
        alias="as",
        description="`file`: /run/secrets/NAME on a tmpfs, mode 0400 (the default); `env`: an "
        "environment variable, visible in /proc/PID/environ and `docker inspect`",
    )

    @model_validator(mode="after")
    def _file_has_path(self) -> SecretRef:
        if self.from_ == "file" and not self.key:
            raise ValueError("`from: file` needs `key:` the path of the file")
        return self


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
    secrets: dict[EnvName, SecretRef] = Field(
        default_factory=dict, description="references only; values are injected at launch"
    )
    health: HealthSpec = Field(default_factory=HealthSpec)
    route: RouteSpec | None = None
    strategy: Strategy = Field(default_factory=RollingStrategy)
    stop_grace: Duration = Field(default=5.0, description="SIGTERM, then SIGKILL after this")
    drain_timeout: Duration = Field(
        default=10.0, description="longest wait for in-flight requests before stopping"
    )
    volumes: list[VolumeSpec] = Field(
        default_factory=list, description="named volumes mounted read-write (law 4)"
    )
    handover_timeout: Duration = Field(
        default=3.0,
        gt=0,
        description="with a single_writer volume: how long the route holds new requests "
        "while the old instance releases the volume and the new one starts",
    )

    # After replicas and strategy are validated, so both can be read from `info.data`.
    @field_validator("volumes")
    @classmethod
    def _volumes(cls, value: list[VolumeSpec], info: ValidationInfo) -> list[VolumeSpec]:
        names = [v.name for v in value]
        twice = sorted({x for x in names if names.count(x) > 1})
        if twice:
            raise ValueError(f"{twice[0]!r} is used by two volumes: give each its own")
        strategy = info.data.get("strategy")
        kind = getattr(strategy, "type", "rolling")
        replicas = info.data.get("replicas", 1)
        for volume in value:
            if not volume.single_writer:
                continue
            if kind != "rolling":
                raise ValueError(
                    f"single_writer volume {volume.name!r} is handed over stop-first, which "
                    f"{kind} cannot do (it runs old and new instances side by side): use the "
                    "rolling strategy, or drop single_writer and use `per_instance: true`"
                )
            if not volume.per_instance and isinstance(replicas, int) and replicas > 1:
                raise ValueError(
                    f"single_writer volume {volume.name!r} is shared by {replicas} replicas: "
                    "use `per_instance: true` (one volume per instance serial) or replicas: 1"
                )
        return value


DriverName = Literal["local", "docker", "swarm", "kubernetes"]


class SwarmSettings(_Strict):
    """Where the `swarm` driver finds its swarm (docs/drivers.md says how traffic reaches it)."""

    manager: str | None = Field(
        default=None,
        description="Docker API address of a swarm manager (unix:///… or tcp://…); "
        "default: DOCKER_HOST, else the local engine",
    )
    node_engines: list[str] = Field(
        default_factory=list,
        description="Docker API address of every node's engine: corral loads each image into "
        "every one of them (no registry needed); default: the manager's engine only",
    )


class KubernetesSettings(_Strict):
    """Where the `kubernetes` driver finds its cluster."""

    namespace: Name = Field(default="default", description="namespace of every object corral makes")
    kubeconfig: str | None = Field(
        default=None, description="kubeconfig file; default: $KUBECONFIG, else ~/.kube/config"
    )
    context: str | None = Field(default=None, description="kubeconfig context; default: current")
    image_registry: str | None = Field(
        default=None,
        description="registry (and path) the cluster pulls corral's images from, by digest, "
        "e.g. registry.example.com/team; you push them there (`skopeo copy oci:… docker://…`)",
    )
    gateway: str | None = Field(
        default=None,
        description="the Gateway API Gateway HTTPRoutes attach to; when set, the driver keeps "
        "one HTTPRoute per routed service weighted as corral's router (export: `corral`)",
    )
    storage_class: str | None = Field(
        default=None, description="storage class of volume claims; default: the cluster's"
    )
    volume_size: str = Field(default="1Gi", description="size each volume claim requests")


class EnvironmentSpec(_Strict):
    """What differs in one environment (`corral -e NAME`); unset fields are the spec's own."""

    driver: DriverName | None = None
    state: str | None = Field(default=None, description="this environment's state store URL")
    swarm: SwarmSettings | None = None
    kubernetes: KubernetesSettings | None = None


class LogSettings(_Strict):
    """Retention of instance logs (corral.logs): each instance keeps its live log and one
    rotated `.1`; logs of instances gone longer than max_age are removed by the agent."""

    max_size: str | int = Field(default="10MB", description="rotate past this size (10MB, 1GiB)")
    max_age: str | int = Field(default="7d", description="rotate past this age; drop gone ones")
    forward: str | None = Field(
        default=None,
        description="also send every line to a syslog server (RFC 5424): syslog://HOST:PORT "
        "(UDP) or syslog+tcp://HOST:PORT; local driver",
    )

    @field_validator("forward")
    @classmethod
    def _forward(cls, value: str | None) -> str | None:
        from corral.logs.forward import parse_target

        if value is not None:
            parse_target(value)
        return value

    @field_validator("max_size")
    @classmethod
    def _size(cls, value: str | int) -> str | int:
        from corral.logs.retention import parse_size

        if parse_size(value) < 1024:
            raise ValueError("must be at least 1KB")
        return value

    @field_validator("max_age")
    @classmethod
    def _age(cls, value: str | int) -> str | int:
        from corral.logs.retention import parse_age

        if parse_age(value) <= 0:
            raise ValueError("must be positive")
        return value


class Spec(_Strict):
    """The whole `corral.yaml`."""

    project: Name | None = Field(
        default=None, description="project name; defaults to the spec directory's name"
    )
    state: str | None = Field(
        default=None,
        description="state store URL (sqlite:///path or postgresql://user@host/db); "
        "$CORRAL_STATE_URL wins; default: SQLite under $CORRAL_HOME. Put no password here: "
        "use a ~/.pgpass file or PGPASSWORD",
    )
    driver: DriverName = Field(
        default="local",
        description="where instances run: `local` (bubblewrap on this host), `docker` "
        "(containers on the Docker engine of DOCKER_HOST; needs `pip install 'corral[docker]'`), "
        "`swarm` (services on a Docker swarm, see `swarm:`) or `kubernetes` (see `kubernetes:`)",
    )
    swarm: SwarmSettings | None = None
    kubernetes: KubernetesSettings | None = None
    logs: LogSettings | None = None
    environments: dict[Name, EnvironmentSpec] = Field(
        default_factory=dict,
        description="named environments (`corral -e NAME`), each overriding driver, state and "
        "driver settings; when any is declared, -e must name one of them",
    )
    images: dict[Name, ImageSpec] = Field(default_factory=dict)
    services: dict[Name, ServiceSpec] = Field(default_factory=dict)

    def for_environment(self, name: str) -> Spec:
        """This spec as environment `name` sees it: its overrides applied over the top level.

        Raises KeyError for an environment the spec does not declare (when it declares any)."""
        if not self.environments:
            return self
        override = self.environments[name]
        changes = {
            field: value
            for field in ("driver", "state", "swarm", "kubernetes")
            if (value := getattr(override, field)) is not None
        }
        return self.model_copy(update=changes)

    def driver_settings(self) -> dict[str, Any]:
        """The chosen driver's own settings (JSON-able), as the agent is given them."""
        settings = (
            getattr(self, self.driver, None) if self.driver in ("swarm", "kubernetes") else None
        )
        chosen = settings.model_dump() if settings is not None else {}
        if self.logs is not None:  # every driver's copies of its instances' logs rotate by it
            chosen["logs"] = self.logs.model_dump()
        return chosen
