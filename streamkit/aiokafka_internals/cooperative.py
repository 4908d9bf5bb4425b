"""Incremental cooperative rebalancing (KIP-429) over the classic group protocol, on aiokafka
0.14's group coordinator, which implements only the eager convention.

The classic protocol (JoinGroup, SyncGroup) does not know "eager" or "cooperative": both are
conventions of the members. aiokafka's eager one, in its `GroupCoordinator`:

- `_on_join_prepare`, before JoinGroup, calls the listener's `on_partitions_revoked` with every
  assigned partition and marks the subscription as being reassigned (the fetcher hands out no
  record until the next assignment);
- `_on_join_complete`, after SyncGroup, installs the new assignment as a whole (every
  partition's fetch state, its position too, is made anew) and calls `on_partitions_assigned`
  with all of it.

`CooperativeRebalance(consumer, accept, refused, hold, follow_up)`, installed on a started
consumer before it subscribes, replaces both on that consumer's coordinator object:

1. Before JoinGroup: nothing is revoked; the member keeps fetching and its listener's tasks
   keep running. The assignor's metadata says which partitions the member still holds
   (`owned`). If the member lost its membership (its generation was reset: the group may have
   given its partitions to others), or `hold()` says the group may be led by a member that
   does not plan cooperative rounds (an older version, in a rolling upgrade), every
   partition it holds is revoked first, as eager.
2. After SyncGroup: `revoked = owned - assigned` goes to `on_partitions_revoked` (while the
   old assignment still stands: their positions are still readable); then the new assignment
   is installed keeping the fetch state (position, pause) of the partitions that stay; then
   `on_partitions_assigned(assigned - owned)`, called even when empty (the assignor's other
   news, standbys, comes with it).
3. If something was revoked, the member asks to rejoin at once: the leader's assignor gives a
   partition that moves to nobody in the first round (its holder revokes it) and to its new
   owner in this follow-up round.
4. If the assignment's user data says partitions wait for this member (`follow_up`), it
   heartbeats every FOLLOW_UP_POLL seconds until the follow-up round begins (an answer
   "rebalancing" makes it rejoin), for FOLLOW_UP_WAIT at most: the round waits for the
   holder's revocation, not also for the new owner's next heartbeat (up to
   `heartbeat_interval_ms`). A heartbeat never starts a rebalance, so asking early is safe.

A member that held partitions through the join needs a leader that plans cooperative rounds:
an assignment whose user data `accept` refuses (a leader that could have given a partition
this member holds to another member in the same round) installs nothing and calls
`refused()`, which must stop the member without committing anything more. A member that
released everything first accepts any assignment, as an eager one would.

An offset commit answered "illegal generation" makes aiokafka reset the member's generation
and member id, as if the group no longer knew it. A cooperative member keeps committing while
it rejoins, so the answer may be to a commit sent in the generation before the one the member
has just joined: then nothing is reset (the Java client checks the same), else the reset
would throw the new generation away, make the member join again, and start another
rebalance, over and over (a storm, seen with two workers under load).

`synced()` says whether the member's generation is the one its last SyncGroup completed: from
a JoinGroup answer until the SyncGroup answer the group is "completing a rebalance", and the
broker refuses a plain offset commit (REBALANCE_IN_PROGRESS); `wait_synced` waits that out.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import logging
from collections.abc import Callable
from typing import Any

from aiokafka.coordinator.protocol import ConsumerProtocolMemberAssignment
from aiokafka.structs import TopicPartition

from streamkit.aiokafka_internals.groups import NO_GENERATION, _require, check_version

log = logging.getLogger(__name__)

FOLLOW_UP_POLL = 0.1  # seconds between two heartbeats of a member awaiting a follow-up round
FOLLOW_UP_WAIT = 15.0  # ... for this long at most (the holder's revocation: a checkpoint)

COOPERATIVE_COORDINATOR_ATTRIBUTES = (
    "_do_heartbeat",
    "_closing",
    "need_rejoin",
    "_on_join_prepare",
    "_on_join_complete",
    "_performed_join_prepare",
    "_group_subscription",
    "_subscription",
    "_lookup_assignor",
    "_stop_commit_offsets_refresh_task",
    "start_commit_offsets_refresh_task",
    "request_rejoin",
    "reset_generation",
    "generation",
    "_do_commit_offsets",
)
SUBSCRIPTION_STATE_ATTRIBUTES = (
    "subscription",
    "listener",
    "begin_reassignment",
    "_notify_assignment_waiters",
)
SUBSCRIPTION_ATTRIBUTES = ("_assignment", "_reassignment_in_progress", "_topics", "assignment")
ASSIGNMENT_ATTRIBUTES = ("_tp_state", "_topic_partitions", "unassign_future", "_unassign")
PARTITION_STATE_ATTRIBUTES = ("_assignment",)

# the generation an offset commit was sent in, while it is answered (its own task's context)
_COMMIT_GENERATION: contextvars.ContextVar[int | None] = contextvars.ContextVar(
    "commit_generation", default=None
)


def check_coordinator(consumer: Any) -> None:
    """The coordinator internals `CooperativeRebalance` replaces or calls (after `start()`)."""
    check_version()
    _require(consumer, ("_coordinator",), "AIOKafkaConsumer")
    coordinator = consumer._coordinator
    _require(coordinator, COOPERATIVE_COORDINATOR_ATTRIBUTES, "GroupCoordinator")
    _require(coordinator._subscription, SUBSCRIPTION_STATE_ATTRIBUTES, "SubscriptionState")


def check_assignment(subscription: Any) -> None:
    """The subscription internals `_install` edits (a subscription with an assignment)."""
    _require(subscription, SUBSCRIPTION_ATTRIBUTES, "Subscription")
    assignment = subscription.assignment
    _require(assignment, ASSIGNMENT_ATTRIBUTES, "Assignment")
    for state in assignment._tp_state.values():
        _require(state, PARTITION_STATE_ATTRIBUTES, "TopicPartitionState")


class CooperativeRebalance:
    """Cooperative rebalancing for one consumer (see the module's docstring)."""

    def __init__(
        self,
        consumer: Any,
        accept: Callable[[bytes], bool],
        refused: Callable[[], None],
        hold: Callable[[], bool],
        follow_up: Callable[[bytes], bool],
    ) -> None:
        check_coordinator(consumer)
        self._accept = accept
        self._hold = hold
        self._refused = refused
        self._follow_up = follow_up
        self._asking: asyncio.Task[None] | None = None  # step 4's heartbeats
        self._coordinator = coordinator = consumer._coordinator
        self._state = coordinator._subscription  # aiokafka's SubscriptionState
        self.owned: set[TopicPartition] = set()  # what the listener holds (told, not revoked)
        self._owned_in: Any = None  # the Subscription `owned` belongs to
        self.synced_generation = NO_GENERATION
        self._synced = asyncio.Event()
        self.revoked = 0  # partitions revoked by cooperative rounds (metrics, tests)
        self.rounds = 0  # SyncGroups completed
        self._reset_generation: Callable[[], None] = coordinator.reset_generation
        coordinator._on_join_prepare = self._join_prepare
        coordinator._on_join_complete = self._join_complete
        coordinator.reset_generation = self._lost_generation
        self._do_commit_offsets: Callable[[Any, Any], Any] = coordinator._do_commit_offsets
        coordinator._do_commit_offsets = self._commit_offsets

    # -- what the worker reads ---------------------------------------------------------------

    def holding(self) -> set[TopicPartition]:
        """The partitions this member holds now (its JoinGroup metadata's `owned`)."""
        if self._state.subscription is not self._owned_in:
            return set()
        return set(self.owned)

    def synced(self) -> bool:
        generation = int(self._coordinator.generation)
        return generation != NO_GENERATION and generation == self.synced_generation

    async def wait_synced(self, within: float) -> bool:
        """Wait until `synced()` (False if it was not within `within` seconds)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + within
        while not self.synced():  # only a SyncGroup's end (`_join_complete`) changes that
            self._synced.clear()
            left = deadline - loop.time()
            if left <= 0:
                return False
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._synced.wait(), left)
        return True

    # -- the coordinator's hooks -------------------------------------------------------------

    async def _commit_offsets(self, assignment: Any, offsets: Any) -> None:
        token = _COMMIT_GENERATION.set(int(self._coordinator.generation))
        try:
            await self._do_commit_offsets(assignment, offsets)
        finally:
            _COMMIT_GENERATION.reset(token)

    def _lost_generation(self) -> None:
        """The group no longer knows this member (or its generation): what it holds may have
        been given to others. Run step 1 again before the next JoinGroup, to revoke it all.
        Unless an offset commit's answer says so of a generation the member has left since."""
        sent, now = _COMMIT_GENERATION.get(), int(self._coordinator.generation)
        if sent is not None and now != NO_GENERATION and now != sent:
            log.info("an offset commit of generation %d refused; now in generation %d", sent, now)
            return
        self._reset_generation()
        self._coordinator._performed_join_prepare = False

    async def _join_prepare(self, previous_assignment: Any) -> None:
        self.stop_asking()
        # step 1
        self._coordinator._group_subscription = None
        subscription = self._state.subscription
        if subscription is not self._owned_in:
            self.owned, self._owned_in = set(), subscription
        lost_membership = int(self._coordinator.generation) == NO_GENERATION
        if self.owned and (lost_membership or not self._hold()):
            lost, self.owned = self.owned, set()
            log.warning(
                "%s: revoking all %d partitions before rejoining (eager)",
                "membership lost" if lost_membership else "a member may not plan cooperatively",
                len(lost),
            )
            self._state.begin_reassignment()  # no record of them is handed out any more
            await self._call("on_partitions_revoked", lost)

    async def _join_complete(
        self, generation: int, member_id: str, protocol: str, assignment_bytes: bytes
    ) -> None:
        coordinator = self._coordinator
        assignor = coordinator._lookup_assignor(protocol)
        assert assignor is not None, f"invalid assignment protocol: {protocol}"
        assignment = ConsumerProtocolMemberAssignment.decode(assignment_bytes)
        subscription = self._state.subscription
        owned = self.owned if subscription is self._owned_in else set()
        if owned and not self._accept(assignment.user_data):
            log.error("generation %d: the leader does not plan cooperative rounds", generation)
            self._refused()
            return
        assigned = set(assignment.partitions())
        revoked, added = owned - assigned, assigned - owned
        self.synced_generation = generation
        self.rounds += 1
        self._synced.set()
        # step 2: revoke first, the old assignment still standing
        if revoked:
            log.info(
                "cooperative rebalance (generation %d): revoking %d of %d partitions",
                generation,
                len(revoked),
                len(owned),
            )
            self.revoked += len(revoked)
            await self._call("on_partitions_revoked", revoked)
        if subscription is not self._state.subscription or not subscription.active:
            return  # the subscription changed under the callback: the coordinator rejoins
        _install(subscription, assigned, keep=owned & assigned)
        self._state._notify_assignment_waiters()
        self.owned, self._owned_in = set(assigned), subscription
        assignor.on_assignment(assignment)
        await coordinator._stop_commit_offsets_refresh_task()
        coordinator.start_commit_offsets_refresh_task(subscription.assignment)
        await self._call("on_partitions_assigned", added)
        if revoked:  # step 3
            coordinator.request_rejoin()
        elif self._follow_up(assignment.user_data):  # step 4
            self.stop_asking()
            self._asking = asyncio.create_task(self._ask_for_follow_up(generation, subscription))

    async def _ask_for_follow_up(self, generation: int, subscription: Any) -> None:
        """Step 4: heartbeat until the follow-up round begins (or this member's generation
        changes, or FOLLOW_UP_WAIT passes)."""
        coordinator = self._coordinator
        closing: asyncio.Future[None] = coordinator._closing  # set when the consumer stops
        loop = asyncio.get_running_loop()
        deadline = loop.time() + FOLLOW_UP_WAIT
        while loop.time() < deadline:
            await asyncio.wait([closing], timeout=FOLLOW_UP_POLL)
            if closing.done() or int(coordinator.generation) != generation:
                return
            if coordinator.need_rejoin(subscription):
                return
            try:
                await coordinator._do_heartbeat()
            except Exception as exc:  # the heartbeat routine meets it too, and acts on it
                log.debug("a heartbeat awaiting the follow-up round failed: %r", exc)
                return

    def stop_asking(self) -> None:
        """Stop step 4's heartbeats (a join begins; they stop by themselves when the consumer
        does)."""
        if self._asking is not None and not self._asking.done():
            self._asking.cancel()
        self._asking = None

    async def _call(self, method: str, tps: set[TopicPartition]) -> None:
        listener = self._state.listener
        if listener is None:
            return
        try:
            await getattr(listener, method)(set(tps))
        except Exception:  # as aiokafka: a listener's failure does not stop the group
            log.exception("rebalance listener %s failed in %s", listener, method)


def _install(subscription: Any, assigned: set[TopicPartition], keep: set[TopicPartition]) -> None:
    """Install `assigned` as the subscription's assignment, keeping the fetch state (position,
    pause, waiters) of the partitions of `keep`, held all along; the others start afresh
    (from the committed offset). A new `Assignment` object, so that the fetcher restarts its
    loop on it and drops what it prefetched for the old one."""
    old = subscription.assignment
    subscription._assign(assigned)  # a new Assignment: new states for all, old one unassigned
    if old is None:
        return
    check_assignment(subscription)
    new = subscription.assignment
    for tp, state in old._tp_state.items():
        if tp in keep and tp in new._tp_state:
            state._assignment = new
            new._tp_state[tp] = state
