"""Settings: one pydantic-settings model, read from arguments and `STREAMKIT_*` variables.

Every value is validated when the app is built, so a bad setting fails at start with a message
that names the setting, the bad value and what to change, never later in the hot path.
"""

from __future__ import annotations

import difflib
import os
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from streamkit.security import check_security


class ConfigError(ValueError):
    """A setting or declaration is wrong; the message says what to change."""


class Settings(BaseSettings):
    """Worker settings. Environment variables use the prefix `STREAMKIT_`
    (`STREAMKIT_COMMIT_INTERVAL=0.5`); `KAFKA_BOOTSTRAP_SERVERS` always wins for the broker."""

    model_config = SettingsConfigDict(env_prefix="STREAMKIT_", extra="forbid")

    broker: str = Field(
        default="localhost:9092",
        description="Bootstrap servers, `host:port[,host:port]`, optionally `kafka://`-prefixed.",
    )
    processing_guarantee: Literal["at_least_once", "exactly_once"] = Field(
        default="at_least_once",
        description=(
            "Delivery guarantee. at_least_once: flush outputs, then commit offsets (a crash "
            "replays, so some outputs repeat). exactly_once: Kafka transactions commit outputs, "
            "changelog records and offsets together (transactional_producer)."
        ),
    )
    transactional_producer: Literal["per_partition", "per_worker"] = Field(
        default="per_worker",
        description=(
            "exactly_once: per_worker (the default), the worker's transactional producers (two "
            "taking turns), offsets committed with the group's generation (KIP-447: the group "
            "coordinator fences a zombie) and one transaction per checkpoint however many "
            "partitions; "
            "per_partition, one per input partition (transactional id "
            "{app}-{topic}-{partition}; the id fences a zombie, and a partition's next owner "
            "aborts a dead worker's transaction at once). See docs/benchmarks.md for which "
            "to choose."
        ),
    )
    transactional_client: Literal["streamkit", "aiokafka"] = Field(
        default="streamkit",
        description=(
            "exactly_once with transactional_producer=per_worker: the client that makes the "
            "worker's transactions. streamkit (the default), streamkit's own transactional "
            "producer on aiokafka's connections (Produce requests encoded by "
            "hand: less work per partition); aiokafka, aiokafka's AIOKafkaProducer. See "
            "docs/benchmarks.md."
        ),
    )
    transaction_timeout_ms: int = Field(
        default=60_000,
        ge=1000,
        description=(
            "exactly_once: the broker aborts a transaction left open this long. Unset: 60 s "
            "with per-partition producers, 10 s with transactional_producer=per_worker (plus "
            "the longest a map_async step's calls may take per event)."
        ),
    )
    commit_interval: float = Field(
        default=1.0,
        gt=0,
        le=3600,
        json_schema_extra={"default_doc": "`1.0`, `0.1` under exactly_once"},
        description=(
            "Seconds between checkpoints. Unset: 1 s at-least-once, 0.1 s exactly-once "
            "(outputs become visible only when their transaction commits, once per hop)."
        ),
    )
    workdir: Path = Field(default=Path("streamkit-data"), description="Local state directory.")
    gc_threshold: int = Field(
        default=50_000,
        ge=0,
        description=(
            "Net allocations between two collections of Python's young generation while a "
            "worker runs (Python's default is 700), with the start-up objects frozen out of "
            "the collector's view: ~10 % less CPU per event. 0 leaves the collector as it is."
        ),
    )
    on_agent_error: Literal["dlq", "stop"] = Field(
        default="dlq",
        description="An exception from agent code: send the event to the DLQ, or stop the worker.",
    )
    auto_offset_reset: Literal["earliest", "latest"] = Field(
        default="earliest", description="Where a new consumer group starts reading."
    )
    max_poll_records: int = Field(
        default=2000,
        ge=1,
        le=1_000_000,
        description="Records a worker fetches at most per poll (fetch_path=consumer).",
    )
    fetch_path: Literal["raw", "consumer"] = Field(
        default="raw",
        description=(
            "How a worker reads its input partitions. raw (the default): its own "
            "read_committed Fetch requests, one per partition leader, the next in flight while "
            "the tasks process the last, records read in one pass in C (streamkit's record "
            "reader; compressed batches, and all with STREAMKIT_PURE_PYTHON=1, by aiokafka's). "
            "consumer: aiokafka's consumer fetcher (getmany), the reference. Both leave the "
            "group membership, assignment and offset commits to aiokafka's consumer."
        ),
    )
    max_buffered_per_partition: int = Field(
        default=4000, ge=1, description="Records fetched but not yet processed, per partition."
    )
    idle_timeout: float = Field(
        default=5.0,
        gt=0,
        description=(
            "Seconds without input after which a task tells the next stage it is idle, so "
            "the next stage's watermark (event time) does not wait for it."
        ),
    )
    table_sync_max_wait: float = Field(
        default=2.0,
        ge=0,
        description=(
            "Seconds a task holds a record back, at most, until the tables it reads from "
            "topics (source=) have been read up to the record's timestamp or to their end "
            "(as Kafka Streams' max.task.idle.ms); counted from the record's arrival and from "
            "the table's last progress. 0: no hold (a record may miss a table row written "
            "just before it)."
        ),
    )
    session_timeout_ms: int = Field(
        default=10_000,
        ge=1000,
        description=(
            "A worker not heard from this long leaves the consumer group; its partitions move "
            "to the others."
        ),
    )
    instance_id: str | None = Field(
        default=None,
        min_length=1,
        max_length=249,
        pattern=r"^[A-Za-z0-9._-]+$",
        description=(
            "Static group membership (KIP-345, group.instance.id): a name unique to this worker "
            "that stays the same across its restarts (the host or pod name, e.g. a StatefulSet's "
            "shop-0). Restarted within session_timeout_ms, the worker gets its partitions back "
            "with no rebalance. A static worker does not leave the group when it stops: its "
            "partitions wait for it until session_timeout_ms. Unset: dynamic membership."
        ),
    )
    rebalance_protocol: Literal["eager", "cooperative"] = Field(
        default="cooperative",
        description=(
            "How a worker takes part in a rebalance. cooperative (KIP-429, the default, as in "
            "Kafka Streams): only the partitions that move stop, in a second round; the other "
            "tasks keep processing and committing. eager: every worker stops every task before "
            "the group reassigns, then reopens what it gets. The two mix in one group, so a "
            "rolling restart switches either way. See docs/rebalancing.md."
        ),
    )
    heartbeat_interval_ms: int = Field(
        default=250,
        ge=100,
        description=(
            "How often a worker tells the group it is alive, and learns that the group is "
            "rebalancing (a worker joining, one leaving); below session_timeout_ms."
        ),
    )
    max_poll_interval_ms: int = Field(
        default=300_000,
        ge=1000,
        description="A worker that does not poll for this long is taken out of the group.",
    )
    linger_ms: int = Field(
        default=5,
        ge=0,
        le=60_000,
        description="Milliseconds the producer waits to fill a batch before sending it.",
    )
    max_batch_size: int = Field(
        default=256 * 1024,
        ge=1024,
        description=(
            "Bytes per producer batch and partition; a single record larger than this is refused."
        ),
    )
    state_cache_entries: int = Field(
        default=100_000, ge=100, description="Cached keys per table partition (clean + dirty)."
    )
    state_write_interval: float = Field(
        default=5.0,
        ge=0,
        le=3600,
        description=(
            "Seconds between two writes of a task's tables to its SQLite file. Every "
            "checkpoint's changes go to the changelog; between two writes they wait in memory "
            "(reads see them), and a crash replays them from the changelog. A row forgotten "
            "before the next write (a closed window, a join's final record) never reaches "
            "SQLite. 0: every checkpoint writes. A task's last checkpoint (revoke, stop) and "
            "unwritten rows at `state_cache_entries` always write (a join's or a window's rows "
            "at the last checkpoint only if they must)."
        ),
    )
    standby_replicas: int = Field(
        default=0, ge=0, le=10, description="Workers that keep a warm copy of each partition."
    )
    postgres_dsn: str | None = Field(
        default=None,
        description=(
            "The PostgreSQL server of PostgresSinks declared without dsn= "
            "(postgresql://user:password@host:port/database)."
        ),
    )
    sink_retry_timeout: float = Field(
        default=300.0,
        gt=0,
        description=(
            "Seconds a sink beyond Kafka (docs/sinks.md) retries an unavailable destination, "
            "its stage waiting meanwhile, before the worker stops with the error."
        ),
    )
    topic_replication_factor: int = Field(
        default=1, ge=1, description="Replication factor of the app's declared topics it creates."
    )
    internal_replication_factor: int | None = Field(
        default=None,
        ge=1,
        description=(
            "Replication factor of the internal topics streamkit creates (changelogs, "
            "repartition, dead-letter and late topics). Unset: 3, or the number of brokers "
            "when the cluster has fewer."
        ),
    )
    internal_min_insync_replicas: int | None = Field(
        default=None,
        ge=1,
        description=(
            "min.insync.replicas of the internal topics streamkit creates. Unset: 2 when they "
            "have 3 or more replicas, else 1 (a write then survives the loss of one broker)."
        ),
    )
    shutdown_timeout: float = Field(
        default=30.0, gt=0, description="Seconds an agent gets to finish its in-flight event."
    )
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field(
        default="INFO", description="The worker's log level (any case)."
    )
    web_enabled: bool = Field(
        default=True,
        description="Serve /metrics, /status and /tables over HTTP (false: no server, no port).",
    )
    web_host: str = Field(default="127.0.0.1", description="Address the HTTP server binds.")
    web_port: int = Field(
        default=0, ge=0, le=65535, description="HTTP port; 0 picks a free one (see /status)."
    )
    web_advertised_host: str | None = Field(
        default=None,
        description=(
            "Host other workers and the CLI use to reach this worker's HTTP server "
            "(default: web_host, or this machine's name when web_host is 0.0.0.0)."
        ),
    )
    web_token: SecretStr | None = Field(
        default=None,
        description=(
            "Bearer token every HTTP request must carry (Authorization: Bearer ..., or "
            "?token=... for the dashboard in a browser); unset: no check. Never logged."
        ),
    )
    otel_enabled: bool = Field(
        default=False,
        description=(
            "OpenTelemetry spans per checkpoint and per rebalance (pip install "
            "'streamkit[otel]'; the application configures the SDK and exporter)."
        ),
    )
    schema_registry_url: str | None = Field(
        default=None,
        pattern=r"^https?://[^\s]+$",
        description=(
            "Base URL of a Confluent-compatible schema registry (Confluent's API; Apicurio's "
            "is at /apis/ccompat/v7), for topics declared with Avro, Protobuf or JsonSchema "
            "codecs (docs/registry.md); `user:password@` in it is sent as basic "
            "authentication. Unset: such a topic fails at start."
        ),
    )
    # -- connection security (docs/security.md); checked by streamkit.security at start ----------
    security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = Field(
        default="PLAINTEXT", description="How to talk to the broker: TLS (SSL), SASL, or both."
    )
    sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] | None = Field(
        default=None, description="SASL_PLAINTEXT / SASL_SSL: the mechanism the listener offers."
    )
    sasl_username: str | None = Field(
        default=None, description="SASL user name (with sasl_password)."
    )
    sasl_password: SecretStr | None = Field(
        default=None, description="Never logged or printed (shows as '**********')."
    )
    ssl_cafile: Path | None = Field(
        default=None, description="PEM file of the CA(s) that signed the broker's certificate."
    )
    ssl_certfile: Path | None = Field(
        default=None, description="PEM client certificate, for brokers that require one."
    )
    ssl_keyfile: Path | None = Field(default=None, description="PEM key of ssl_certfile.")
    ssl_password: SecretStr | None = Field(default=None, description="Password of ssl_keyfile.")
    ssl_check_hostname: bool = Field(
        default=True, description="Check that the broker's certificate names the host dialled."
    )

    @model_validator(mode="before")
    @classmethod
    def _default_commit_interval(cls, data: Any) -> Any:
        if isinstance(data, dict) and data.get("commit_interval") is None:
            exactly_once = data.get("processing_guarantee") == "exactly_once"
            data["commit_interval"] = 0.1 if exactly_once else 1.0
        return data

    @field_validator("broker")
    @classmethod
    def _check_broker(cls, value: str) -> str:
        servers = parse_bootstrap(value)
        if not servers:
            raise ValueError("give at least one host:port, e.g. localhost:9092")
        return ",".join(servers)

    @field_validator("workdir")
    @classmethod
    def _check_workdir(cls, value: Path) -> Path:
        if value.exists() and not value.is_dir():
            raise ValueError(f"{str(value)!r} is a file, not a directory: give a directory")
        if value.is_dir() and not os.access(value, os.W_OK | os.X_OK):
            raise ValueError(f"{str(value)!r} is not writable: give a directory you can write")
        return value

    @model_validator(mode="after")
    def _check_heartbeat(self) -> Settings:
        if self.heartbeat_interval_ms >= self.session_timeout_ms:
            raise ValueError(
                f"heartbeat_interval_ms ({self.heartbeat_interval_ms}) must be below "
                f"session_timeout_ms ({self.session_timeout_ms}): lower "
                "STREAMKIT_HEARTBEAT_INTERVAL_MS (a third of the session timeout is usual)"
            )
        return self

    @model_validator(mode="after")
    def _check_min_insync(self) -> Settings:
        rf, isr = self.internal_replication_factor, self.internal_min_insync_replicas
        if rf is not None and isr is not None and isr > rf:
            raise ValueError(
                f"internal_min_insync_replicas ({isr}) is above internal_replication_factor "
                f"({rf}): no write could ever succeed; lower STREAMKIT_INTERNAL_MIN_INSYNC_REPLICAS"
            )
        return self

    @field_validator("sasl_mechanism", "security_protocol", mode="before")
    @classmethod
    def _upper_name(cls, value: Any) -> Any:
        return value.upper() if isinstance(value, str) else value

    @model_validator(mode="after")
    def _check_security(self) -> Settings:
        problem = check_security(self)
        if problem is not None:
            raise ValueError(problem)
        return self

    @field_validator("log_level", mode="before")
    @classmethod
    def _upper_level(cls, value: Any) -> Any:
        return value.upper() if isinstance(value, str) else value

    @property
    def bootstrap_servers(self) -> str:
        return os.environ.get("KAFKA_BOOTSTRAP_SERVERS") or self.broker


def parse_bootstrap(value: str) -> list[str]:
    """`kafka://a:1,b:2` → `["a:1", "b:2"]`; raises ValueError on a server without a port."""
    servers = []
    for part in value.split(","):
        part = part.strip().removeprefix("kafka://").rstrip("/")
        if not part:
            continue
        host, sep, port = part.rpartition(":")
        if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ValueError(f"{part!r} is not host:port with a port 1-65535 (e.g. localhost:9092)")
        servers.append(part)
    return servers


# Variables with the prefix that belong to tools around the framework, not to a worker.
NOT_SETTINGS = frozenset(
    {
        "STREAMKIT_KAFKA_CACHE",
        "STREAMKIT_KAFKA_DATA",
        "STREAMKIT_KAFKA_STATE",
        "STREAMKIT_PURE_PYTHON",
        "STREAMKIT_TEST_DELAY",
        "STREAMKIT_TEST_HOOK",
    }
)


def load_settings(**overrides: Any) -> Settings:
    """Build `Settings` from keyword overrides and the environment; ConfigError on bad values."""
    given = {k: v for k, v in overrides.items() if v is not None}
    unknown = sorted(
        name
        for name in os.environ
        if name.startswith("STREAMKIT_")
        and name.removeprefix("STREAMKIT_").lower() not in Settings.model_fields
        and name not in NOT_SETTINGS
    )
    if unknown:
        known = [f"STREAMKIT_{f.upper()}" for f in Settings.model_fields]
        hints = "".join(_did_you_mean(name, known) for name in unknown)
        raise ConfigError(
            f"unknown setting {', '.join(unknown)}{hints}: unset it or use one of "
            f"{', '.join(known)}"
        )
    try:
        return Settings(**given)
    except ValidationError as exc:
        raise ConfigError(describe_validation_error(exc)) from None


SECRET_SETTINGS = frozenset({"sasl_password", "ssl_password", "postgres_dsn"})


def describe_validation_error(exc: ValidationError) -> str:
    """One line per problem. Never echoes a secret: a secret field's input is masked, and a
    check over several settings (no field name) says its own piece without the input."""
    lines = []
    for err in exc.errors():
        loc = [str(p) for p in err["loc"]]
        if not loc:  # a model-level check: its message names the settings to change
            lines.append(str(err["msg"]).removeprefix("Value error, "))
            continue
        name = loc[0]
        env = f"STREAMKIT_{name.upper()}"
        if err["type"] == "extra_forbidden":
            hint = _did_you_mean(name, list(Settings.model_fields))
            lines.append(
                f"unknown setting {name}{hint}: known are {', '.join(Settings.model_fields)}"
            )
            continue
        given = err.get("input")
        given = str(given) if isinstance(given, Path) else given
        got = "'**********'" if name in SECRET_SETTINGS else repr(given)
        message = str(err["msg"]).removeprefix("Value error, ")
        lines.append(f"bad setting {name} = {got}: {message} (set it with {name}=... or {env})")
    return "; ".join(lines)


def _did_you_mean(name: str, known: list[str]) -> str:
    close = difflib.get_close_matches(name.upper(), [k.upper() for k in known], n=1, cutoff=0.7)
    if not close:
        return ""
    match = next(k for k in known if k.upper() == close[0])
    return f" (did you mean {match}?)"
