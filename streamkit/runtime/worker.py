"""Worker: one process of an app. Start, run the background tasks, stop cleanly.

Start: verify/create topics → register the schemas of schema-registry codecs → load the global
tables → start the producer → join the group (tasks are created as partitions are assigned) →
run the named background tasks `fetch`, `commit`, `standby` and `web` (the HTTP server of
runtime/web.py, bound before joining so the group learns it), and `global`, `sources` to follow
global tables and tables read from a topic.
Exactly-once: one transactional producer serves every partition (its committed offsets read
once no transaction holds them), or one per partition fences the partition's previous owner.
Stop (SIGINT/SIGTERM, or a failure): stop fetching → each task finishes its in-flight event →
final checkpoint (no revoke in between) → leave the group → stop the producer.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
import time
from typing import Any

from aiokafka.structs import TopicPartition

from streamkit.aiokafka_internals import Commits, CooperativeRebalance, know_topics
from streamkit.app import App
from streamkit.clients import make_consumer, make_producer, make_raw_client
from streamkit.registry.codec import prepare_app_codecs
from streamkit.runtime import faults, gc_tuning
from streamkit.runtime.admin import ensure_app_topics
from streamkit.runtime.assignor import StreamkitAssignor, awaits_follow_up, planned_cooperatively
from streamkit.runtime.async_map import check_call_budget, longest_calls
from streamkit.runtime.cadence import Cadence
from streamkit.runtime.checkpoint import Checkpointer
from streamkit.runtime.exactly_once import (
    TransactionalCheckpointer,
    TransactionFailed,
    WorkerTransactionCheckpointer,
)
from streamkit.runtime.fetch import RawFetch, consumer_fetch
from streamkit.runtime.listener import Listener
from streamkit.runtime.positions import Positions
from streamkit.runtime.purge import RepartitionPurger
from streamkit.runtime.task import Task
from streamkit.runtime.task_manager import TaskManager
from streamkit.runtime.txn_producers import ProducerSet, TransactionalProducers, WorkerProducer
from streamkit.runtime.web import WebServer
from streamkit.security import describe_security
from streamkit.state.changelog import ChangelogReader
from streamkit.state.global_table import GlobalTables
from streamkit.state.source_tables import follow_source_tables, is_followed
from streamkit.state.standby import Standbys

log = logging.getLogger(__name__)


class WorkerFailed(Exception):
    """The worker stopped because something failed; the cause is chained."""


class Worker:
    def __init__(self, app: App) -> None:
        if not app.agents and not app.sink_nodes:
            raise WorkerFailed(
                f"app {app.id} has no agents: decorate one with @app.agent(topic), or write a "
                "stream to a topic with app.stream(topic)...to(other)"
            )
        self.app = app
        self.settings = app.settings
        self.client_id = f"{app.id}-{socket.gethostname()}-{os.getpid()}"
        self._stopping = asyncio.Event()
        self._checkpoint_due = asyncio.Event()  # a regular checkpoint now (or the stop)
        self._wake = asyncio.Event()  # the commit loop looks again: due, or tasks started
        self._failure: BaseException | None = None
        self._checkpoint_broken = False  # a checkpoint raised: the final one is skipped
        self._background: list[asyncio.Task[None]] = []
        self.producer: Any = None
        self.consumer: Any = None
        self.fetch: RawFetch | None = None  # fetch_path=raw: the input partitions' fetch
        self.tasks: TaskManager | None = None
        self.checkpointer: Checkpointer | TransactionalCheckpointer | None = None
        self.producers: ProducerSet | None = None  # exactly-once only
        self.positions: Positions | None = None  # exactly-once: where assigned tasks start
        self.reader: ChangelogReader | None = None
        self.standbys: Standbys | None = None
        self.global_tables: GlobalTables | None = None
        self.assignor: Any = None
        self.rebalance: CooperativeRebalance | None = None  # rebalance_protocol=cooperative
        self._recovery_due: TransactionFailed | None = None  # a cooperative revoke's failure
        self.purger: RepartitionPurger | None = None  # deletes consumed repartition records
        self.cadence: Cadence | None = None  # when checkpoints are due (the commit loop's)
        self.web: WebServer | None = None  # /metrics, /status, /tables (settings.web_enabled)

    # -- control -------------------------------------------------------------------------------

    @property
    def stopping(self) -> bool:
        return self._stopping.is_set()

    def request_stop(self) -> None:
        self._stopping.set()

    def fail(self, exc: BaseException) -> None:
        if self._failure is None:
            self._failure = exc
            log.error("worker failing: %s: %s", type(exc).__name__, exc, exc_info=exc)
        self._stopping.set()

    # -- lifecycle -----------------------------------------------------------------------------

    async def run(self, *, install_signal_handlers: bool = True) -> None:
        """Run until stopped. Raises WorkerFailed if stopped by a failure."""
        loop = asyncio.get_running_loop()
        if install_signal_handlers:
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.add_signal_handler(sig, self.request_stop)
        tuned = False
        try:
            await self._start()
            tuned = gc_tuning.tune(self.settings.gc_threshold)
            await self._stopping.wait()
        finally:
            if tuned:
                gc_tuning.restore()
            await self._stop()
            if install_signal_handlers:
                for sig in (signal.SIGINT, signal.SIGTERM):
                    loop.remove_signal_handler(sig)
        if self._failure is not None:
            raise WorkerFailed(str(self._failure)) from self._failure

    async def _start(self) -> None:
        app, settings = self.app, self.settings
        check_call_budget(app.stages, settings)  # map_async under exactly-once
        await ensure_app_topics(app, client_id=self.client_id)
        # schema-registry codecs register their schemas: a refused one fails the start
        await asyncio.to_thread(prepare_app_codecs, app)
        # global tables are loaded before the group is joined: no agent sees them half-read
        self.global_tables = GlobalTables(
            app.id, list(app.global_tables.values()), settings, f"{self.client_id}-global"
        )
        await self.global_tables.start()
        self.producer = make_producer(settings, self.client_id)
        await self.producer.start()
        repartition = {out.name for st in app.stages for out in st.outputs}
        self.purger = RepartitionPurger(settings, self.client_id, repartition)
        self.reader = ChangelogReader(settings, f"{self.client_id}-restore")
        self.tasks = TaskManager(
            app, self.producer, self.fail, self.reader, on_state_full=self.request_checkpoint
        )
        endpoint = None
        if settings.web_enabled:  # bound before joining: the group learns its address
            self.web = WebServer(self)
            endpoint = await self.web.start()
            self._spawn("web", self.web.run())
            self.tasks.on_closed = self.web.metrics.retire
        cooperative = settings.rebalance_protocol == "cooperative"
        self.assignor = StreamkitAssignor(
            self.tasks.stateful_topics,
            settings.standby_replicas,
            self._owned,
            self.tasks.local_state,
            endpoint,
            copartitioned=self.tasks.copartitioned,
            cooperative=cooperative,
        )
        self.standbys = Standbys(
            app.id, settings, self.tasks.stages_by_topic, f"{self.client_id}-standby"
        )
        self.consumer = make_consumer(
            settings,
            app.id,
            self.client_id,
            partition_assignment_strategy=(self.assignor,),
            group_instance_id=settings.instance_id,  # static membership, when set
        )
        if settings.processing_guarantee == "exactly_once":
            inputs = self.tasks.by_input  # (a checkpoint that wrote to them is followed)
            if settings.transactional_producer == "per_worker":  # KIP-447
                pause = longest_calls(app.stages)
                one = WorkerProducer(settings, app.id, self.client_id, self.consumer, pause)
                self.producers = one
                self.checkpointer = WorkerTransactionCheckpointer(app.id, one, inputs)
                self.checkpointer.stable_ends = self.reader.stable_ends  # (`markers.py`)
                self.tasks.share_collector = True  # one batch per destination per checkpoint
            else:
                self.producers = TransactionalProducers(settings, app.id, self.client_id)
                self.checkpointer = TransactionalCheckpointer(app.id, self.producers, inputs)
        else:
            self.checkpointer = Checkpointer(self.consumer)
        if self.producers is not None:
            lock = None
            if isinstance(self.checkpointer, WorkerTransactionCheckpointer):
                lock = self.checkpointer.between_checkpoints()  # one collector for every task
            self.positions = Positions(
                self.consumer, self.producers, self.tasks, self._assign, self.fail, lock
            )
            self.positions.stopping = self._stopping.is_set
        if self.web is not None:
            self.checkpointer.on_checkpoint = self.web.metrics.observe_checkpoint
        stateful = [self.reader.connect()] if self.tasks.stateful_topics() else []
        await asyncio.gather(self.consumer.start(), *stateful)  # restores need no bootstrap
        missing = await know_topics(self.consumer, self.tasks.source_topics, 30.0)
        if missing:  # joining anyway: a later metadata refresh rebalances them in
            log.warning("topics %s not in the cluster's metadata yet", sorted(missing))
        if cooperative:  # before subscribing: the first join is cooperative already
            self.rebalance = CooperativeRebalance(
                self.consumer, planned_cooperatively, self._old_leader, self.assignor.may_hold,
                awaits_follow_up,
            )  # fmt: skip
        self._subscribe()
        if settings.fetch_path == "raw":
            client = make_raw_client(settings, f"{self.client_id}-fetch")
            self.fetch = RawFetch(self.consumer, self.tasks, settings, client)
            self._spawn("fetch", self.fetch.run())
        else:
            self._spawn("fetch", consumer_fetch(self.consumer, self.tasks, settings))
        self._spawn("commit", self._commit_loop())
        self._spawn("standby", self.standbys.run())
        if app.global_tables:
            self._spawn("global", self.global_tables.run())
        if any(is_followed(t) for t in app.tables.values()):
            sources = follow_source_tables(self.tasks, settings, f"{self.client_id}-sources")
            self._spawn("sources", sources)
        log.info(
            "worker %s started: app %s, agents %s, broker %s (%s)",
            self.client_id,
            app.id,
            ", ".join(app.agents),
            settings.bootstrap_servers,
            describe_security(settings),
        )

    def _owned(self) -> set[TopicPartition]:
        """The JoinGroup metadata's `owned`: under cooperative rebalancing what this worker
        holds now; eager, what it held before this rebalance (for stickiness)."""
        assert self.tasks is not None
        if self.rebalance is not None and self.assignor.may_hold():
            return self.rebalance.holding()
        return self.tasks.owned()

    def _old_leader(self) -> None:
        """A cooperative worker got an assignment from a leader without cooperative rounds: it
        may have given a partition this worker holds to another. Stop, committing nothing
        more (the partitions' next owners start from the last commit)."""
        self._checkpoint_broken = True
        self.fail(
            WorkerFailed(
                f"group {self.app.id} came to be led by a worker of a streamkit version "
                "without cooperative rebalancing while this worker (STREAMKIT_REBALANCE_"
                "PROTOCOL=cooperative) held partitions through the rebalance; it stopped "
                "without committing more. Restart it: it stays eager while such a worker is "
                "in the group"
            )
        )

    def _subscribe(self) -> None:
        assert self.tasks is not None
        listener = Listener(self.on_revoked, self.on_assigned)
        self.consumer.subscribe(self.tasks.source_topics, listener=listener)

    def _spawn(self, name: str, coro: Any) -> None:
        task = asyncio.create_task(coro, name=f"streamkit-{name}")
        task.add_done_callback(self._background_done)
        self._background.append(task)

    def _background_done(self, task: asyncio.Task[None]) -> None:
        if not task.cancelled() and task.exception() is not None:
            self.fail(task.exception())  # type: ignore[arg-type]

    def request_checkpoint(self) -> None:
        """Checkpoint now, not at the interval (a full table cache, the stop, a recovery)."""
        self._checkpoint_due.set()
        self._wake.set()

    async def _commit_loop(self) -> None:
        """Checkpoint at a fixed rate, every `commit_interval` (or sooner on request; under
        exactly-once also once this worker's stages read what the last one wrote:
        `runtime/cadence.py`). It ends only between two checkpoints: a checkpoint is never
        cut in half by the shutdown."""
        assert self.tasks is not None and self.checkpointer is not None
        settings = self.settings
        cadence = self.cadence = Cadence(
            settings.commit_interval, settings.processing_guarantee == "exactly_once"
        )
        due = self._checkpoint_due
        while not self._stopping.is_set():
            follow_up = await self._until_due(cadence)
            due.clear()
            if self._stopping.is_set():
                return
            if self._recovery_due is not None:  # a cooperative revoke's transaction failed
                failure, self._recovery_due = self._recovery_due, None
                cadence.disarm()
                await self.recover(failure)
                continue
            if self.rebalance is not None and not self.rebalance.synced():
                # between JoinGroup and SyncGroup the group takes no plain offset commit
                await self.rebalance.wait_synced(settings.session_timeout_ms / 1000)
                if self._stopping.is_set():
                    return
            if not follow_up:
                cadence.begin()
            try:  # of the tasks running once it begins (an assignment may be starting some)
                async with self.checkpointer.between_checkpoints():
                    await self.checkpointer.commit_held(list(self.tasks.tasks.values()))
            except TransactionFailed as exc:
                cadence.disarm()
                if self._stopping.is_set() and exc.cut_short:  # the stop cut a task short
                    self._checkpoint_broken = True  # mid-event: nothing more commits
                    return
                await self.recover(exc)
                continue
            except Exception:
                self._checkpoint_broken = True  # e.g. a state write on a full disk
                raise
            if follow_up:
                cadence.follow_ups += 1
                cadence.disarm()
            else:
                cadence.end()
                cadence.arm(self.checkpointer.last_written, set(self.tasks.by_input))
            if self.purger is not None:
                await self.purger.after_checkpoint(self.checkpointer.committed)

    async def _until_due(self, cadence: Cadence) -> bool:
        """Wait for the next checkpoint: True for a follow-up, False for a regular one."""
        assert self.tasks is not None
        due = self._checkpoint_due  # set: a checkpoint was requested (a regular one now)
        while True:
            if due.is_set():
                return False
            now = time.monotonic()
            follow_up, until = cadence.due(now, self.tasks.by_input)
            if until <= now:
                return follow_up
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), until - now)
            self._wake.clear()

    async def recover(self, exc: TransactionFailed) -> None:
        """A transaction failed (this worker was fenced, or an error): what its tasks did since
        their last commit is not in Kafka. Drop every task without committing (their tables go
        with them), stop the transactional producers, and rejoin the group: the partitions'
        next owners, this worker perhaps, start again from the committed offsets and state."""
        assert self.tasks is not None and self.producers is not None
        checkpointer = self.checkpointer
        assert isinstance(checkpointer, TransactionalCheckpointer)
        log.warning("%s; dropping uncommitted work and rejoining the group", exc)
        if self.positions is not None:
            self.positions.reset()  # what an assignment read before this starts nothing
        # between checkpoints: a revoke's checkpoint (the rebalance listener's) may be running
        async with checkpointer.between_checkpoints():
            dropped = await self.tasks.revoke(list(self.tasks.tasks))
            for task in dropped:
                task.collector.discard()
                task.close_state()
            checkpointer.forget(itp for t in dropped for itp in t.inputs)
            await self.producers.close()
        self.consumer.unsubscribe()
        self._subscribe()

    async def _stop(self) -> None:
        # 1. stop fetching; let the commit loop finish its checkpoint and end (one still
        # running after shutdown_timeout waits for an event that step 2 then cuts short)
        self.request_checkpoint()
        for task in self._background:
            if task.get_name() != "streamkit-commit":
                task.cancel()
        closed: list[Task] = []
        if self._background:
            await asyncio.wait(self._background, timeout=self.settings.shutdown_timeout)
            if self.tasks is not None and not all(t.done() for t in self._background):
                closed = await self.tasks.revoke(list(self.tasks.tasks))  # step 2, early
        await asyncio.gather(*self._background, return_exceptions=True)
        self._background.clear()
        if self.web is not None:
            await self.web.close()  # (the task closes it too, unless cancelled before it ran)
        # 2. every task finishes its in-flight event; 3. final checkpoint. Between two
        # checkpoints: a rebalance's revoke (`on_revoked`) waits for it, so the partitions
        # reach their next owners with the offsets it commits, not the ones before it
        if self.tasks is not None and self.checkpointer is not None:
            async with self.checkpointer.between_checkpoints():
                closed += await self.tasks.revoke(list(self.tasks.tasks))
                await faults.delayed("delay-stop-closed")
                faults.reached("crash-stop-closed")
                if self._checkpoint_broken:  # a checkpoint failed: commit nothing more
                    log.error("checkpoint failed: final checkpoint skipped, work dropped")
                    for dropped in closed:
                        dropped.collector.discard()
                else:
                    try:
                        await self.checkpointer.commit_held(closed)
                    except TransactionFailed as exc:
                        if not exc.cut_short:  # else: aborted like a crash, replayed by the
                            self.fail(exc)  # next owner (a task cancelled mid-event; logged)
                    except Exception as exc:
                        self.fail(exc)
            faults.reached("crash-stop-committed")
            for closed_task in closed:
                closed_task.close_state()
        if self.positions is not None:
            await self.positions.close()
        if self.producers is not None:
            await self.producers.close()
        if self.reader is not None:
            with contextlib.suppress(Exception):
                await self.reader.stop()
        if self.fetch is not None:
            with contextlib.suppress(Exception):
                await self.fetch.close()
        if self.standbys is not None:
            await self.standbys.close()
        if self.purger is not None:
            with contextlib.suppress(Exception):
                await self.purger.close()
        if self.global_tables is not None:
            with contextlib.suppress(Exception):
                await self.global_tables.close()
        # 4. leave the group, stop the producer
        if self.consumer is not None:
            with contextlib.suppress(Exception):
                await self.consumer.stop()
            faults.reached("crash-stop-left")
        if self.producer is not None:
            with contextlib.suppress(Exception):
                await self.producer.stop()
            log.info("worker %s stopped", self.client_id)

    # -- rebalance -----------------------------------------------------------------------------

    async def on_revoked(self, tps: set[TopicPartition]) -> None:
        checkpointer, closed = self.checkpointer, []
        assert self.tasks is not None and checkpointer is not None
        if self.positions is not None:
            self.positions.revoked(tps)
        try:
            # no checkpoint between the close and this commit: it would seal the closed
            # tasks' outputs (per worker, in the collector all tasks share) without their offsets
            async with checkpointer.between_checkpoints():
                closed = await self.tasks.revoke(tps)
                await faults.delayed("delay-after-revoke-close")
                faults.reached("crash-after-revoke-close")
                # cooperative: the others keep running; their checkpoint goes with this one
                # (one producer per worker: they share the transaction that must commit now)
                running = [] if self.rebalance is None else list(self.tasks.tasks.values())
                try:
                    await checkpointer.commit_held([*closed, *running])
                except TransactionFailed as exc:
                    if running and set(exc.failed) & set(self.tasks.tasks):
                        self._recovery_due = exc  # running tasks lost work: drop, rejoin
                        self.request_checkpoint()
                    raise
        except TransactionFailed as exc:
            # Their uncommitted work is dropped with them; the next owners start from the
            # last commit. Nothing else to do: the group is rebalancing already.
            log.warning("%s; partitions released without their last checkpoint", exc)
        except Exception as exc:  # aiokafka would only log it
            self._checkpoint_broken = True
            self.fail(exc)
        finally:
            checkpointer.forget(tps)
            for task in closed:
                task.close_state()

    async def on_assigned(self, tps: set[TopicPartition]) -> None:
        assert self.tasks is not None and self.standbys is not None
        if self.fetch is not None:  # before any await: the consumer's fetcher leaves them
            self.fetch.assigned()
        if self._stopping.is_set():
            return
        try:
            # standbys first: one that became active must release its store before the task
            await self.standbys.update(self.assignor.standbys - tps)
            if self.positions is not None:  # exactly-once: the committed offsets, final
                await self.positions.assigned(tps)
                return
            commits = await self.tasks.partition_times(self.consumer, tps)
            if not self._stopping.is_set():  # (a stop begun meanwhile would miss them)
                self._assign(tps, {}, commits, seek=False)
        except Exception as exc:  # aiokafka would only log it
            self.fail(exc)

    def _assign(
        self, tps: set[TopicPartition], producers: Any, commits: Commits, seek: bool = True
    ) -> None:
        """Start the tasks of `tps` (exactly-once: between two checkpoints, `Positions`, from
        the commits it seeked to), each resuming its partition time from its commit."""
        assert self.tasks is not None
        known = set(self.tasks.tasks.values())
        self.tasks.assign(tps, producers, commits, seek)
        started = [t for t in self.tasks.tasks.values() if t not in known]
        if self.cadence is not None:  # exactly-once: their first events commit at once
            self.cadence.lead(started)
            self._wake.set()
        if type(self.checkpointer) is TransactionalCheckpointer:  # (per worker: no adopting)
            # cooperative: a checkpoint may be running; the new tasks must not join it
            self.checkpointer.adopt(started)
