"""Topic administration at start: create what is missing, verify what exists, and give the
app's existing internal topics the settings it declares for them."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Iterable, Iterator
from typing import TYPE_CHECKING, Any, TypeVar

from aiokafka.admin import NewTopic
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType
from aiokafka.errors import KafkaConnectionError, NodeNotReadyError, RequestTimedOutError

from streamkit.clients import make_admin
from streamkit.partitioning import resolve_partitions
from streamkit.security import explain_unreachable
from streamkit.settings import ConfigError, Settings
from streamkit.topics import Topic

if TYPE_CHECKING:
    from streamkit.app import App

log = logging.getLogger(__name__)

UNKNOWN_TOPIC = 3
TOPIC_EXISTS = 36
TOPIC_CONFIG = 1  # DescribeConfigs' config_source: set on the topic itself
NODE_DOWN = (NodeNotReadyError, KafkaConnectionError, RequestTimedOutError)
NODE_DOWN_WITHIN = 30.0  # seconds a cluster has to elect around a dead broker

T = TypeVar("T")


class BrokerUnreachable(Exception):
    """No broker answered at the bootstrap address."""


async def open_admin(settings: Settings, client_id: str) -> Any:
    admin = make_admin(settings, client_id)
    try:
        with _quiet("aiokafka"):  # our error below says it once, with what to do
            await admin.start()
    except KafkaConnectionError as exc:
        await admin.close()
        servers = settings.bootstrap_servers
        if settings.security_protocol != "PLAINTEXT":  # say what failed: TLS, SASL, ...
            first = servers.split(",")[0]
            with _quiet("aiokafka"):
                cause = await explain_unreachable(settings, first)
            raise BrokerUnreachable(f"cannot connect to Kafka at {first}: {cause}") from None
        raise BrokerUnreachable(
            f"cannot reach Kafka at {servers} ({exc}); start a broker "
            "(make kafka-up) or set KAFKA_BOOTSTRAP_SERVERS / STREAMKIT_BROKER (a TLS or SASL "
            "listener also needs STREAMKIT_SECURITY_PROTOCOL, see docs/security.md)"
        ) from None
    return admin


@contextlib.contextmanager
def _quiet(logger_name: str) -> Iterator[None]:
    logger = logging.getLogger(logger_name)
    level = logger.level
    logger.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        logger.setLevel(level)


async def answered(call: Callable[[], Awaitable[T]]) -> T:
    """`call`'s answer, asked again while the broker it went to is down: the admin client
    sends each request to a broker it picks at random, on a cluster maybe one that just died
    (a worker restarting then would fail at start for nothing)."""
    deadline = time.monotonic() + NODE_DOWN_WITHIN
    while True:
        try:
            return await call()
        except NODE_DOWN:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.2)


async def known(call: Callable[[], Awaitable[list[Any]]]) -> list[tuple[Any, ...]]:
    """The per-resource answers of a config request (DescribeConfigs, AlterConfigs: error
    code first, topic name fourth), asked again while a topic that exists is unknown to the
    broker that answered: on a cluster, the broker picked may not have learnt yet of a topic
    another worker created a moment ago (found by the three-broker chaos test: two workers
    starting together, one failed at start with code 3). Past `NODE_DOWN_WITHIN` the answer
    is returned as it is."""
    deadline = time.monotonic() + NODE_DOWN_WITHIN
    while True:
        answers = [r for response in await answered(call) for r in response.resources]
        if time.monotonic() > deadline or all(r[0] != UNKNOWN_TOPIC for r in answers):
            return answers
        await asyncio.sleep(0.2)


async def describe(admin: Any, names: list[str]) -> dict[str, int | None]:
    """topic → partition count on the broker, or None when it does not exist."""
    found: dict[str, int | None] = {}
    for meta in await answered(lambda: admin.describe_topics(names)):
        if meta["error_code"] == UNKNOWN_TOPIC:
            found[meta["topic"]] = None
        elif meta["error_code"] == 0:
            found[meta["topic"]] = len(meta["partitions"])
        else:
            raise ConfigError(f"topic {meta['topic']}: broker error code {meta['error_code']}")
    return found


async def internal_replication(admin: Any, settings: Settings) -> tuple[int, int]:
    """(replication factor, min.insync.replicas) of the internal topics: the settings, else
    what the cluster allows: 3 replicas (fewer brokers: as many as there are), min ISR 2 with
    3 replicas or more, else 1. A replication factor above the broker count is a ConfigError."""
    brokers = len((await answered(admin.describe_cluster))["brokers"])
    rf = settings.internal_replication_factor
    if rf is None:
        rf = max(1, min(3, brokers))
    elif rf > brokers:
        raise ConfigError(
            f"internal_replication_factor is {rf} but the cluster has {brokers} broker(s): "
            f"lower STREAMKIT_INTERNAL_REPLICATION_FACTOR to {brokers} or less"
        )
    isr = settings.internal_min_insync_replicas
    if isr is None:
        isr = 2 if rf >= 3 else 1
    return rf, min(isr, rf)


async def ensure_topics(
    settings: Settings,
    topics: Iterable[Topic],
    *,
    client_id: str,
    visible_within: float = 30.0,
    internal: frozenset[str] = frozenset(),
) -> None:
    """Create missing topics with their declared partitions; check existing ones agree.
    Internal topics (`Topic.internal`, or named in `internal`) get the replication of
    `internal_replication`.

    Sets `topic.partitions` to the broker's count. An existing topic whose partition count
    differs from the declaration is a ConfigError that gives both numbers."""
    topics = list(topics)
    admin = await open_admin(settings, client_id)
    try:
        existing = await describe(admin, [t.name for t in topics])
        problems = []
        missing = []
        for topic in topics:
            count = existing.get(topic.name)
            if count is None:
                missing.append(topic)
            elif topic.declared_partitions not in (None, count):
                problems.append(
                    f"topic {topic.name} has {count} partitions on the broker but the app "
                    f"declares {topic.declared_partitions}: change partitions= to {count}, "
                    "or delete/repartition the topic"
                )
            else:
                topic.partitions = count
        if problems:
            raise ConfigError("; ".join(problems))
        await reconcile_configs(admin, [t for t in topics if t not in missing])
        if missing:
            await _create(admin, settings, missing, internal)
            await _wait_visible(admin, missing, visible_within)
    finally:
        await admin.close()


async def reconcile_configs(admin: Any, topics: list[Topic]) -> None:
    """Existing internal topics (`Topic.internal`) get the settings the app declares for them,
    as a new one would: a join's changelog created `compact` by an earlier version needs
    `compact,delete` and its retention, else it grows for good (purged join rows write no
    tombstone). Only the declared keys change; the topic's other settings stay."""
    owned = [t for t in topics if t.internal and t.config]
    if not owned:
        return
    asked = [ConfigResource(ConfigResourceType.TOPIC, t.name) for t in owned]
    current: dict[str, dict[str, str]] = {}
    for code, message, _kind, name, entries, *_ in await known(
        lambda: admin.describe_configs(asked)
    ):
        if code != 0:
            raise ConfigError(f"cannot read the settings of topic {name}: {code} {message}")
        current[name] = {e[0]: e[1] for e in entries if e[3] == TOPIC_CONFIG}
    changes = []
    for t in owned:
        now = current.get(t.name, {})
        differ = {k: v for k, v in t.config.items() if now.get(k) != v}
        if differ:
            was = {k: now.get(k, "(broker default)") for k in differ}
            log.warning(
                "topic %s: settings %s changed to %s, as the app declares", t.name, was, differ
            )
            # AlterConfigs replaces the topic's whole set: its other settings go along
            changes.append(ConfigResource(ConfigResourceType.TOPIC, t.name, {**now, **t.config}))
    if not changes:
        return
    for code, message, _kind, name in await known(lambda: admin.alter_configs(changes)):
        if code != 0:
            raise ConfigError(
                f"cannot change the settings of internal topic {name}: {code} {message} "
                "(the app needs AlterConfigs on it, or set them by hand)"
            )


async def ensure_app_topics(app: App, *, client_id: str) -> None:
    """All of an app's topics: declared ones first, then repartition and changelog topics,
    whose partition count defaults to their stage input's (known only after the first step)."""
    stages = app.stages
    outputs = {out.name for st in stages for out in st.outputs}
    outputs |= {t.changelog.name for st in stages for t in st.tables if not t.source}
    # a window's default late topic is internal too, though not declared so
    late = frozenset(f"{app.id}-{name}-late" for name in app.agents)
    await ensure_topics(
        app.settings,
        [t for t in app.topics.values() if t.name not in outputs],
        client_id=client_id,
        internal=late,
    )
    resolve_partitions(stages)  # ConfigError when inputs are not co-partitioned
    await ensure_topics(
        app.settings, [t for t in app.topics.values() if t.name in outputs], client_id=client_id
    )


async def _create(
    admin: Any, settings: Settings, topics: list[Topic], internal: frozenset[str]
) -> None:
    internal_rf, internal_isr = 0, 0
    is_internal = {t.name: t.internal or t.name in internal for t in topics}
    if any(is_internal.values()):
        internal_rf, internal_isr = await internal_replication(admin, settings)
    requests = []
    for t in topics:
        rf, config = settings.topic_replication_factor, t.config
        if is_internal[t.name]:
            rf = internal_rf
            config = {"min.insync.replicas": str(internal_isr), **t.config}
        requests.append(
            NewTopic(
                t.name,
                num_partitions=t.declared_partitions or 1,
                replication_factor=rf,
                topic_configs=config,
            )
        )
    response = await answered(lambda: admin.create_topics(requests))
    for name, code, *rest in response.topic_errors:
        if code not in (0, TOPIC_EXISTS):
            message = rest[0] if rest else ""
            raise ConfigError(f"cannot create topic {name}: error {code} {message}")
    for t, request in zip(topics, requests, strict=True):
        t.partitions = t.declared_partitions or 1
        log.info(
            "created topic %s with %d partitions, %d replicas",
            t.name,
            t.partitions,
            request.replication_factor,
        )


async def _wait_visible(admin: Any, topics: list[Topic], within: float) -> None:
    deadline = time.monotonic() + within
    names = [t.name for t in topics]
    while True:
        found = await describe(admin, names)
        if all(found.get(t.name) == t.partitions for t in topics):
            return
        if time.monotonic() > deadline:
            raise ConfigError(f"topics {names} were created but did not appear in {within}s")
        await asyncio.sleep(0.1)
