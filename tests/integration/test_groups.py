"""Consumer groups (the classic group protocol) through real clients:
confluent-kafka (librdkafka), kafka-python, aiokafka, kcat -G, and raw frames
for the error codes no client shows.

The acceptance suite (/work/shared/conformance/test_groups.py) covers the
basics with confluent members polled from one thread: a 2+2 split, leave and
join rebalances, cooperative-sticky, a static member back within its session,
auto.offset.reset, commits visible to admin, describe/list/delete of one
group. These tests cover other ground: offsets across clean and hard broker
restarts, a member that dies without LeaveGroup, three client libraries in one
group, assignor (protocol) selection and rejection, the admin offset
operations (alter, OffsetDelete, state filters, batched DeleteGroups), the
coordinator's error codes on the wire, static members beyond their session
and fencing, kcat's balanced consumer, and offset expiry.

Every member runs in its own thread (librdkafka serves rebalances only
inside poll(), kafka-python's join runs inside poll(), aiokafka needs its own
event loop), so no member starves another during a rebalance. Every wait is
bounded; every member is closed at the end of its test.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import json
import queue
import shutil
import signal
import struct
import subprocess
import sys
import threading
import time

import aiokafka
import aiokafka.abc
import kafka
import kafka.errors
import pytest
from aiokafka.structs import TopicPartition as AioTopicPartition
from confluent_kafka import (Consumer, ConsumerGroupState, ConsumerGroupTopicPartitions, KafkaError, KafkaException,
                             TopicCollection, TopicPartition)
from kafka.coordinator.assignors.roundrobin import RoundRobinPartitionAssignor

import kclients as kc
import rawwire
from harness import unique, wait_until
from kclients import Consumed, Rec

# A group's first JoinGroup waits group.initial.rebalance.delay.ms (Kafka's
# default: 3 s) for more members. Most tests do not need that wait.
FAST_JOIN = {"group.initial.rebalance.delay.ms": "0"}

OFFSETS_TOPIC = "__consumer_offsets"

# Kafka error codes (https://kafka.apache.org/protocol#protocol_error_codes)
NONE = 0
COORDINATOR_LOAD_IN_PROGRESS = 14
COORDINATOR_NOT_AVAILABLE = 15
ILLEGAL_GENERATION = 22
INCONSISTENT_GROUP_PROTOCOL = 23
INVALID_GROUP_ID = 24
UNKNOWN_MEMBER_ID = 25
INVALID_SESSION_TIMEOUT = 26
MEMBER_ID_REQUIRED = 79

# ListGroups/DescribeGroups report a group's protocol type; clients call a
# group with none (offsets committed without joining) "simple". Kafka keeps the
# protocol type when the last member leaves (ClassicGroup.initNextGeneration
# clears only the protocol name) and writes it in the group's metadata record.
NOT_SIMPLE = ("a group whose members used the consumer protocol keeps protocol type 'consumer' "
              "after it becomes Empty, so it is not a simple group")

FENCED_CODES = (KafkaError._FATAL, KafkaError._FENCED, KafkaError.FENCED_INSTANCE_ID)


# --------------------------------------------------------------------------
# group members, each driven by its own thread
# --------------------------------------------------------------------------

class Member:
    """One group member consuming in a thread of its own. It records its
    assignment (from the rebalance callbacks), the records it consumed, and the
    errors its client reported (not raised: tests look at them). Test code talks
    to the client only through call(), which runs a function in the member's
    thread (kafka-python's consumer is not thread-safe; aiokafka's lives in the
    member's event loop).

    commit_each: commit offset+1 synchronously after each record, and count a
    record as consumed only once its commit succeeded; after a failed commit,
    seek back so the record comes again (at-least-once, so "exactly once in
    the records" means "no redelivery of a committed record")."""

    client = "?"

    def __init__(self, bootstrap: str, group: str, topics: list[str], name: str,
                 config: dict | None = None, commit_each: bool = False):
        self.bootstrap = bootstrap
        self.group = group
        self.topics = list(topics)
        self.name = name
        self.config = dict(config or {})
        self.commit_each = commit_each
        self._lock = threading.Lock()
        self._assigned: set[tuple[str, int]] = set()
        self._records: list[Consumed] = []
        self._errors: list = []
        self._commit_errors: list = []
        self.assign_events = 0
        self.revoke_events = 0
        self._calls: queue.Queue = queue.Queue()
        self._stop = threading.Event()
        self._crash: BaseException | None = None
        self.closed = False
        self._thread = threading.Thread(target=self._main, name=f"member-{name}", daemon=True)
        self._thread.start()

    # -- state, read from the test thread --------------------------------
    def assignment(self) -> set[tuple[str, int]]:
        with self._lock:
            return set(self._assigned)

    def partitions(self, topic: str | None = None) -> set[int]:
        return {p for (t, p) in self.assignment() if topic is None or t == topic}

    def records(self) -> list[Consumed]:
        with self._lock:
            return list(self._records)

    def errors(self) -> list:
        with self._lock:
            return list(self._errors)

    def commit_errors(self) -> list:
        with self._lock:
            return list(self._commit_errors)

    def check_alive(self):
        if self._crash is not None:
            raise AssertionError(f"member {self.name} ({self.client}) crashed: {self._crash!r}")
        if self.closed:
            return
        if not self._thread.is_alive():
            raise AssertionError(f"member {self.name} ({self.client}) stopped on its own")

    def describe(self) -> str:
        return (f"{self.name}: partitions {sorted(self.assignment())}, {len(self.records())} records, "
                f"errors {self.errors()[:3]}, commit errors {self.commit_errors()[:3]}")

    # -- bookkeeping, from the member thread -----------------------------
    def _set_assigned(self, tps):
        with self._lock:
            self._assigned = set(tps)
            self.assign_events += 1

    def _drop_assigned(self, tps):
        with self._lock:
            self._assigned -= set(tps)
            self.revoke_events += 1

    def _add_record(self, rec: Consumed):
        with self._lock:
            self._records.append(rec)

    def _add_error(self, err):
        with self._lock:
            if len(self._errors) < 200:
                self._errors.append(err)

    def _add_commit_error(self, err):
        with self._lock:
            if len(self._commit_errors) < 200:
                self._commit_errors.append(err)

    def _main(self):
        try:
            self._run()
        except BaseException as exc:  # noqa: BLE001 - reported through check_alive()
            self._crash = exc

    def _next_call(self):
        try:
            return self._calls.get_nowait()
        except queue.Empty:
            return None

    def _serve_calls(self, consumer):
        while (item := self._next_call()) is not None:
            fn, fut = item
            try:
                fut.set_result(fn(consumer))
            except BaseException as exc:  # noqa: BLE001 - handed to the caller
                fut.set_exception(exc)

    # -- control, from the test thread -----------------------------------
    def call(self, fn, timeout: float = 30.0):
        """Run fn(consumer) in the member's thread; return its result or raise its exception."""
        self.check_alive()
        fut: concurrent.futures.Future = concurrent.futures.Future()
        self._calls.put((fn, fut))
        try:
            return fut.result(timeout)
        except concurrent.futures.TimeoutError:
            raise AssertionError(f"member {self.name}: call not served within {timeout}s "
                                 f"({self.describe()})") from None

    def commit(self, offsets: dict[tuple[str, int], int | tuple[int, str]]):
        """Commit {(topic, partition): offset or (offset, metadata)} as this member
        (its generation and member id), synchronously."""
        raise NotImplementedError

    def close(self, timeout: float = 30.0):
        """Stop polling and close the client (LeaveGroup for a dynamic member)."""
        if self.closed:
            return
        self.closed = True
        self._stop.set()
        self._thread.join(timeout)
        assert not self._thread.is_alive(), f"member {self.name} did not close within {timeout}s"
        if self._crash is not None:
            raise AssertionError(f"member {self.name} ({self.client}) crashed: {self._crash!r}")

    def _run(self):
        raise NotImplementedError


class ConfluentMember(Member):
    client = "confluent"

    def __init__(self, bootstrap, group, topics, name="confluent-member", config=None, commit_each=False):
        conf = {"bootstrap.servers": bootstrap, "group.id": group, "client.id": name,
                "enable.auto.commit": False, "auto.offset.reset": "earliest",
                "session.timeout.ms": 10_000, "heartbeat.interval.ms": 1000}
        conf.update(config or {})
        self.consumer = Consumer(conf)
        super().__init__(bootstrap, group, topics, name, config, commit_each)

    def _on_assign(self, consumer, partitions):
        self._set_assigned((tp.topic, tp.partition) for tp in partitions)

    def _on_revoke(self, consumer, partitions):
        self._drop_assigned((tp.topic, tp.partition) for tp in partitions)

    def _run(self):
        c = self.consumer
        try:
            c.subscribe(self.topics, on_assign=self._on_assign, on_revoke=self._on_revoke, on_lost=self._on_revoke)
            while not self._stop.is_set():
                self._serve_calls(c)
                msg = c.poll(0.1)
                if msg is None:
                    continue
                err = msg.error()
                if err is not None:
                    if err.code() != KafkaError._PARTITION_EOF:
                        self._add_error(err)
                    continue
                rec = kc.from_confluent(msg)
                if self.commit_each and not self._commit_one(c, rec):
                    continue
                self._add_record(rec)
        finally:
            c.close()

    def _commit_one(self, c, rec: Consumed) -> bool:
        try:
            res = c.commit(offsets=[TopicPartition(rec.topic, rec.partition, rec.offset + 1)], asynchronous=False)
            bad = [tp.error for tp in res or () if tp.error is not None]
            if not bad:
                return True
            self._add_commit_error(bad)
        except KafkaException as exc:
            self._add_commit_error(exc)
        try:
            c.seek(TopicPartition(rec.topic, rec.partition, rec.offset))
        except KafkaException:
            pass                     # no longer assigned: the next owner starts at the commit
        return False

    def commit(self, offsets):
        # confluent-kafka-python would commit metadata with a trailing NUL (see
        # kclients.committed_metadata): metadata is for the other two clients.
        assert all(isinstance(v, int) for v in offsets.values()), "commit metadata with kafka-python or aiokafka"

        def fn(c):
            res = c.commit(offsets=[TopicPartition(t, p, o) for (t, p), o in offsets.items()], asynchronous=False)
            bad = [(tp.topic, tp.partition, tp.error) for tp in res if tp.error is not None]
            assert not bad, f"commit failed: {bad}"
        self.call(fn)

    def member_id(self) -> str:
        return self.call(lambda c: c.memberid())


class _KafkaPythonListener(kafka.ConsumerRebalanceListener):
    def __init__(self, member: Member):
        self.member = member

    def on_partitions_revoked(self, revoked):
        self.member._drop_assigned((tp.topic, tp.partition) for tp in revoked)

    def on_partitions_assigned(self, assigned):
        self.member._set_assigned((tp.topic, tp.partition) for tp in assigned)


class KafkaPythonMember(Member):
    client = "kafka-python"

    def __init__(self, bootstrap, group, topics, name="kafka-python-member", config=None, commit_each=False):
        super().__init__(bootstrap, group, topics, name, config, commit_each)

    def _run(self):
        conf = {"bootstrap_servers": self.bootstrap, "group_id": self.group, "client_id": self.name,
                "enable_auto_commit": False, "auto_offset_reset": "earliest",
                "session_timeout_ms": 10_000, "heartbeat_interval_ms": 1000}
        conf.update(self.config)
        c = kafka.KafkaConsumer(**conf)
        try:
            # kafka-python's group leader assigns from the metadata it has when
            # it joins; with a zero initial rebalance delay it may join before
            # its first metadata answer and assign itself nothing until the
            # next refresh (5 minutes). Learn the topics first, as a long-lived
            # application would have.
            for topic in self.topics:
                c.partitions_for_topic(topic)
            c.subscribe(self.topics, listener=_KafkaPythonListener(self))
            while not self._stop.is_set():
                self._serve_calls(c)
                try:
                    batches = c.poll(timeout_ms=100)
                except kafka.errors.KafkaError as exc:
                    self._add_error(exc)
                    time.sleep(0.2)
                    continue
                for tp, recs in batches.items():
                    for r in recs:
                        if self.commit_each:
                            try:
                                c.commit({tp: kafka.OffsetAndMetadata(r.offset + 1, "", -1)})
                            except kafka.errors.KafkaError as exc:
                                self._add_commit_error(exc)
                                if tp in c.assignment():
                                    c.seek(tp, r.offset)
                                break        # the rest of this batch comes again after the seek
                        self._add_record(kc.from_kafka_python(r))
        finally:
            c.close()

    def commit(self, offsets):
        self.call(lambda c: c.commit({kafka.TopicPartition(t, p): kafka.OffsetAndMetadata(*_pair(v), -1)
                                      for (t, p), v in offsets.items()}))


class _AiokafkaListener(aiokafka.abc.ConsumerRebalanceListener):
    def __init__(self, member: Member):
        self.member = member

    def on_partitions_revoked(self, revoked):
        self.member._drop_assigned((tp.topic, tp.partition) for tp in revoked)

    def on_partitions_assigned(self, assigned):
        self.member._set_assigned((tp.topic, tp.partition) for tp in assigned)


class AiokafkaMember(Member):
    client = "aiokafka"

    def __init__(self, bootstrap, group, topics, name="aiokafka-member", config=None, commit_each=False):
        super().__init__(bootstrap, group, topics, name, config, commit_each)

    def _run(self):
        asyncio.run(self._amain())

    async def _serve_calls_async(self, consumer):
        while (item := self._next_call()) is not None:
            fn, fut = item
            try:
                result = fn(consumer)
                if asyncio.iscoroutine(result):
                    result = await result
                fut.set_result(result)
            except BaseException as exc:  # noqa: BLE001 - handed to the caller
                fut.set_exception(exc)

    async def _amain(self):
        conf = {"bootstrap_servers": self.bootstrap, "group_id": self.group, "client_id": self.name,
                "enable_auto_commit": False, "auto_offset_reset": "earliest",
                "session_timeout_ms": 10_000, "heartbeat_interval_ms": 1000}
        conf.update(self.config)
        c = aiokafka.AIOKafkaConsumer(**conf)
        await c.start()
        try:
            c.subscribe(topics=self.topics, listener=_AiokafkaListener(self))
            while not self._stop.is_set():
                await self._serve_calls_async(c)
                try:
                    batches = await c.getmany(timeout_ms=100)
                except Exception as exc:  # noqa: BLE001 - recorded for the test
                    self._add_error(exc)
                    await asyncio.sleep(0.2)
                    continue
                for tp, recs in batches.items():
                    for m in recs:
                        if self.commit_each:
                            try:
                                await c.commit({tp: m.offset + 1})
                            except Exception as exc:  # noqa: BLE001
                                self._add_commit_error(exc)
                                if tp in c.assignment():
                                    c.seek(tp, m.offset)
                                break
                        self._add_record(kc.from_aiokafka(m))
        finally:
            await c.stop()

    def commit(self, offsets):
        self.call(lambda c: c.commit({AioTopicPartition(t, p): _pair(v) for (t, p), v in offsets.items()}))


def _pair(v: int | tuple[int, str]) -> tuple[int, str]:
    return (v, "") if isinstance(v, int) else v


@pytest.fixture
def members():
    """Members a test creates (append them); all closed at the end whatever happens."""
    made: list[Member] = []
    yield made
    for m in made:
        try:
            m.close()
        except Exception as exc:  # noqa: BLE001 - the test has its own verdict
            print(f"closing member {m.name}: {exc!r}")


def join(members: list[Member], member: Member) -> Member:
    members.append(member)
    return member


def wait_for(members: list[Member], condition, timeout: float, what: str):
    """Until condition() is truthy (every member still running); on timeout,
    fail with every member's state."""
    def check():
        for m in members:
            m.check_alive()
        return condition()
    try:
        return wait_until(check, timeout, what)
    except AssertionError as exc:
        state = "\n  ".join(m.describe() for m in members)
        raise AssertionError(f"{exc}\n  {state}") from None


def owns(member: Member, partitions):
    return lambda: member.partitions() == set(partitions)


def split(members: list[Member], partitions: int, sizes: list[int] | None = None):
    """All members' assignments are disjoint, cover range(partitions), and have the given sizes."""
    def check():
        parts = [m.partitions() for m in members]
        if sum(len(p) for p in parts) != partitions or set().union(*parts) != set(range(partitions)):
            return False
        return sizes is None or sorted(len(p) for p in parts) == sorted(sizes)
    return check


def hold_still(members: list[Member], seconds: float, what: str):
    """For `seconds`, every member keeps exactly the assignment it has now."""
    before = {m.name: m.assignment() for m in members}
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        for m in members:
            m.check_alive()
            now = m.assignment()
            assert now == before[m.name], \
                f"{what}: member {m.name} went from {sorted(before[m.name])} to {sorted(now)}"
        time.sleep(0.05)


def positions(recs: list[Consumed]) -> list[tuple[int, int]]:
    return sorted((r.partition, r.offset) for r in recs)


def span(partitions, start: int, stop: int) -> list[tuple[int, int]]:
    return sorted((p, o) for p in partitions for o in range(start, stop))


def produce_spread(bootstrap: str, topic: str, partitions: int, per_partition: int, tag: str):
    recs = [Rec(value=f"{tag}-p{p}-{i}".encode(), key=f"k{i}".encode(), partition=p)
            for i in range(per_partition) for p in range(partitions)]
    kc.produce_confluent(bootstrap, topic, recs)


def settle(members: list[Member], seconds: float = 1.0):
    """Give members a moment to receive anything extra (records delivered twice would show up here)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        for m in members:
            m.check_alive()
        time.sleep(0.05)


def delete_group_when_empty(bootstrap: str, group: str, timeout: float = 15.0):
    a = kc.admin(bootstrap)

    def attempt():
        try:
            a.delete_consumer_groups([group], request_timeout=15)[group].result(timeout=30)
            return True
        except KafkaException as exc:
            if exc.args[0].code() == KafkaError.NON_EMPTY_GROUP:
                return False
            raise
    wait_until(attempt, timeout, f"group {group} to become deletable")


def kafka_admin(bootstrap: str) -> kafka.KafkaAdminClient:
    return kafka.KafkaAdminClient(bootstrap_servers=bootstrap, client_id="felice-it-admin")


# --------------------------------------------------------------------------
# 1. committed offsets across restarts
# --------------------------------------------------------------------------

def _aiokafka_simple_commit(bootstrap: str, group: str, topic: str, offsets: dict[int, tuple[int, str]]):
    """Commit from a consumer that assigns partitions itself and never joins
    the group (generation -1, empty member id): a "simple" group."""
    async def run():
        c = aiokafka.AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False)
        await c.start()
        try:
            c.assign([AioTopicPartition(topic, p) for p in offsets])
            await c.commit({AioTopicPartition(topic, p): (o, m) for p, (o, m) in offsets.items()})
        finally:
            await c.stop()
    kc.run_async(run(), 60)


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_committed_offsets_survive_clean_and_hard_restarts(make_broker, members):
    """Offsets committed by a confluent-kafka group member (the later of two
    commits of a partition wins), by a kafka-python member (with metadata), and
    by an aiokafka consumer that never joins (a simple group, with metadata),
    together with an OffsetDelete and a DeleteGroups, are all replayed from
    __consumer_offsets after SIGTERM + restart and after SIGKILL + restart:
    admin sees exactly the same offsets and metadata, the same groups (Empty;
    simple or not), no deleted group and no deleted offset; a new member
    resumes exactly at the commits (no gap, no redelivery), and its own commits
    survive the next crash."""
    broker = make_broker(FAST_JOIN)
    bs = broker.bootstrap
    topic = kc.create_topic(bs, unique("g-restart"), partitions=3)
    produce_spread(bs, topic, 3, 10, "before")
    g1, g2, g3, g4 = (unique(f"g{i}-restart") for i in range(1, 5))

    m = join(members, ConfluentMember(bs, g1, [topic], name="g1-first"))
    wait_for([m], owns(m, {0, 1, 2}), 30, "the g1 member to own all 3 partitions")
    m.commit({(topic, 0): 2})
    m.commit({(topic, 0): 4, (topic, 1): 7, (topic, 2): 10})
    m.close()

    m = join(members, KafkaPythonMember(bs, g2, [topic], name="g2-first"))
    wait_for([m], owns(m, {0, 1, 2}), 30, "the g2 member to own all 3 partitions")
    m.commit({(topic, 0): (1, "kp-p0"), (topic, 1): (9, "kp-p1")})
    m.close()

    _aiokafka_simple_commit(bs, g3, topic, {2: (5, "simple-p2")})

    m = join(members, ConfluentMember(bs, g4, [topic], name="g4-first"))
    wait_for([m], owns(m, {0, 1, 2}), 30, "the g4 member to own all 3 partitions")
    m.commit({(topic, 0): 3})
    m.close()
    delete_group_when_empty(bs, g4)

    ka = kafka_admin(bs)
    try:
        result = ka.delete_group_offsets(g2, [kafka.TopicPartition(topic, 1)])
    finally:
        ka.close()
    assert result == {kafka.TopicPartition(topic, 1): kafka.errors.NoError}, result

    expected = {  # {group: {(topic, partition): (offset, metadata)}}
        g1: {(topic, 0): (4, ""), (topic, 1): (7, ""), (topic, 2): (10, "")},
        g2: {(topic, 0): (1, "kp-p0")},
        g3: {(topic, 2): (5, "simple-p2")},
    }

    def check(when: str):
        a = kc.admin(bs)
        for g, want in expected.items():
            assert kc.committed_offsets(bs, g, a) == {k: o for k, (o, _) in want.items()}, \
                f"{when}: committed offsets of {g}"
            assert kc.committed_metadata(bs, g) == want, f"{when}: committed offsets and metadata of {g}"
        assert kc.committed_offsets(bs, g4, a) == {}, f"{when}: the deleted group {g4} has offsets again"
        listed = kc.list_groups(bs, a=a)
        assert g4 not in listed, f"{when}: the deleted group {g4} is listed again"
        for g in expected:
            assert g in listed, f"{when}: group {g} is not listed"
            assert listed[g].state == ConsumerGroupState.EMPTY, f"{when}: {g} is {listed[g].state}"
        for g in (g1, g2):
            assert not listed[g].is_simple_consumer_group, f"{when}: {g}: {NOT_SIMPLE}"
        assert listed[g3].is_simple_consumer_group, f"{when}: a group that never joined is a simple group"

    check("before any restart")
    # the offsets live in the internal topic, created with offsets.topic.num.partitions (50)
    assert kc.topics(bs).get(OFFSETS_TOPIC) == 50
    a = kc.admin(bs)
    desc = a.describe_topics(TopicCollection([OFFSETS_TOPIC]), request_timeout=15)[OFFSETS_TOPIC].result(timeout=30)
    assert desc.is_internal, f"{OFFSETS_TOPIC} is not marked internal"

    rc, _, killed = broker.stop()
    assert (rc, killed) == (0, False), f"clean stop: exit code {rc}, needed SIGKILL: {killed}"
    broker.start()
    check("after SIGTERM and restart")

    # g1 resumes exactly at its commits: p0 from 4, p1 from 7, p2 (committed 10) nothing old
    m = join(members, ConfluentMember(bs, g1, [topic], name="g1-resumed", commit_each=True))
    wait_for([m], lambda: len(m.records()) >= 9, 40, "the resumed g1 member to read 9 records")
    settle([m])
    assert positions(m.records()) == span([0], 4, 10) + span([1], 7, 10)
    produce_spread(bs, topic, 3, 2, "after")
    wait_for([m], lambda: len(m.records()) >= 15, 30, "the resumed g1 member to read the 6 new records")
    settle([m])
    assert positions(m.records()) == sorted(span([0], 4, 12) + span([1], 7, 12) + span([2], 10, 12))
    m.close()
    expected[g1] = {(topic, p): (12, "") for p in range(3)}

    broker.restart(hard=True)
    check("after SIGKILL and restart")

    # g2 resumes at its p0 commit; p1 (offset deleted) and p2 (never committed) follow
    # auto.offset.reset=latest, i.e. start at the end (12), not at the deleted 9
    m = join(members, KafkaPythonMember(bs, g2, [topic], name="g2-resumed", config={"auto_offset_reset": "latest"},
                                        commit_each=True))
    wait_for([m], owns(m, {0, 1, 2}), 30, "the resumed g2 member to own all 3 partitions")
    for p in (1, 2):
        got = m.call(lambda c, p=p: c.position(kafka.TopicPartition(topic, p)))
        assert got == 12, f"g2 partition {p}: starts at {got}, expected the end (12) under auto.offset.reset=latest"
    wait_for([m], lambda: len(m.records()) >= 11, 30, "the resumed g2 member to read partition 0 from 1")
    produce_spread(bs, topic, 3, 1, "last")
    wait_for([m], lambda: len(m.records()) >= 14, 30, "the resumed g2 member to read the 3 newest records")
    settle([m])
    assert positions(m.records()) == sorted(span([0], 1, 13) + [(1, 12), (2, 12)])
    m.close()


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_active_member_carries_on_across_clean_and_hard_restarts(make_broker, members):
    """A member that stays subscribed while the broker is stopped (SIGTERM) and
    later killed (SIGKILL) and restarted reconnects by itself (rejoining if the
    broker asks) and goes on from its last commit: every record is read, none
    twice, and the group's commits end at the high watermarks."""
    broker = make_broker(FAST_JOIN)
    bs = broker.bootstrap
    topic = kc.create_topic(bs, unique("g-carry-on"), partitions=2)
    group = unique("g-carry-on")
    m = join(members, ConfluentMember(bs, group, [topic], name="carry-on", commit_each=True,
                                      config={"reconnect.backoff.max.ms": 500}))
    wait_for([m], owns(m, {0, 1}), 30, "the member to own both partitions")
    for rnd, how in enumerate((None, "SIGTERM", "SIGKILL")):
        if how is not None:
            broker.restart(hard=(how == "SIGKILL"))
        produce_spread(bs, topic, 2, 5, f"round{rnd}")
        wait_for([m], lambda n=10 * (rnd + 1): len(m.records()) >= n, 60,
                 f"round {rnd} (after {how or 'no restart'}): {10 * (rnd + 1)} records")
    settle([m], 1.5)
    assert positions(m.records()) == span([0, 1], 0, 15), "records lost or read twice across restarts"
    assert kc.committed_offsets(bs, group) == {(topic, 0): 15, (topic, 1): 15}


# --------------------------------------------------------------------------
# 2. a member killed without LeaveGroup
# --------------------------------------------------------------------------

DOOMED_MEMBER = r'''
import json, sys
import kafka
from kafka.coordinator.assignors.range import RangePartitionAssignor

bootstrap, group, topic = sys.argv[1:4]

def emit(**kw):
    sys.stdout.write(json.dumps(kw) + "\n")
    sys.stdout.flush()

class Listener(kafka.ConsumerRebalanceListener):
    def on_partitions_revoked(self, revoked):
        emit(revoked=sorted(tp.partition for tp in revoked))
    def on_partitions_assigned(self, assigned):
        emit(assigned=sorted(tp.partition for tp in assigned))

consumer = kafka.KafkaConsumer(bootstrap_servers=bootstrap, group_id=group, client_id="doomed-member",
                               enable_auto_commit=False, auto_offset_reset="earliest",
                               session_timeout_ms=6000, heartbeat_interval_ms=1000,
                               partition_assignment_strategy=[RangePartitionAssignor])
consumer.subscribe([topic], listener=Listener())
while True:
    for tp, records in consumer.poll(timeout_ms=200).items():
        for r in records:
            try:
                consumer.commit({tp: kafka.OffsetAndMetadata(r.offset + 1, "doomed", -1)})
            except kafka.errors.KafkaError as exc:
                emit(commit_failed=repr(exc))
                consumer.seek(tp, r.offset)
                break
            emit(consumed=[r.partition, r.offset])
'''


class ChildMember:
    """A kafka-python group member in a subprocess (the script above), which
    reports its assignments and its committed records as JSON lines."""

    def __init__(self, bootstrap: str, group: str, topic: str, stderr_path):
        self._stderr = open(stderr_path, "wb")
        self.stderr_path = stderr_path
        self.proc = subprocess.Popen([sys.executable, "-c", DOOMED_MEMBER, bootstrap, group, topic],
                                     stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=self._stderr,
                                     text=True, start_new_session=True)
        self._lock = threading.Lock()
        self.events: list[dict] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self):
        for line in self.proc.stdout:
            try:
                event = json.loads(line)
            except ValueError:
                continue
            with self._lock:
                self.events.append(event)

    def partitions(self) -> set[int]:
        owned: set[int] = set()
        with self._lock:
            for e in self.events:
                if "assigned" in e:
                    owned = set(e["assigned"])
                elif "revoked" in e:
                    owned -= set(e["revoked"])
        return owned

    def consumed(self) -> list[tuple[int, int]]:
        with self._lock:
            return sorted(tuple(e["consumed"]) for e in self.events if "consumed" in e)

    def check_alive(self):
        if self.proc.poll() is not None:
            self._stderr.flush()
            tail = self.stderr_path.read_text(errors="replace")[-3000:]
            raise AssertionError(f"the member subprocess exited with {self.proc.returncode}:\n{tail}")

    def kill9(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def cleanup(self):
        self.kill9()
        self._reader.join(5)
        self._stderr.close()


@pytest.mark.slow
@pytest.mark.timeout(180)
def test_killed_member_is_expired_after_its_session_timeout(make_broker, members, tmp_path):
    """A kafka-python member in another process is SIGKILLed (no LeaveGroup;
    its TCP connection just closes). Kafka does not treat a closed connection
    as leaving: the survivor keeps its own partitions until the dead member's
    session.timeout.ms (6000, the broker's group.min.session.timeout.ms) has
    passed, then a rebalance gives it every partition, and it starts on the
    dead member's partitions at the dead member's commits: every record is
    read exactly once across both members."""
    broker = make_broker(FAST_JOIN)
    bs = broker.bootstrap
    topic = kc.create_topic(bs, unique("g-killed"), partitions=4)
    group = unique("g-killed")
    session = {"session.timeout.ms": 6000, "heartbeat.interval.ms": 1000, "partition.assignment.strategy": "range"}
    survivor = join(members, ConfluentMember(bs, group, [topic], name="survivor", config=session, commit_each=True))
    wait_for([survivor], owns(survivor, range(4)), 30, "the survivor to own all 4 partitions")

    child = ChildMember(bs, group, topic, tmp_path / "doomed-member.stderr")
    try:
        def two_and_two():
            child.check_alive()
            mine, theirs = survivor.partitions(), child.partitions()
            return len(mine) == 2 and len(theirs) == 2 and mine | theirs == set(range(4))
        wait_for([survivor], two_and_two, 40, "a 2 + 2 split between the survivor and the doomed member")
        theirs = child.partitions()
        mine = survivor.partitions()

        produce_spread(bs, topic, 4, 6, "first")
        wait_for([survivor], lambda: (child.check_alive() or len(child.consumed()) >= 12)
                 and len(survivor.records()) >= 12, 30, "each member to read (and commit) its 12 records")
        assert child.consumed() == span(theirs, 0, 6)
        assert positions(survivor.records()) == span(mine, 0, 6)

        child.kill9()
        # No LeaveGroup was sent: nothing may move before the session timeout runs out.
        hold_still([survivor], 2.5, "right after the member was killed (session.timeout.ms=6000)")
        wait_for([survivor], owns(survivor, range(4)), 60,
                 "the survivor to take all partitions once the dead member's session expired")
    finally:
        child.cleanup()

    produce_spread(bs, topic, 4, 5, "second")
    wait_for([survivor], lambda: len(survivor.records()) >= 12 + 20, 30, "the survivor to read the 20 new records")
    settle([survivor])
    seen = child.consumed() + positions(survivor.records())
    assert sorted(seen) == span(range(4), 0, 11), "records lost or read twice when the survivor took over"
    assert positions(r for r in survivor.records() if r.partition in theirs) == span(theirs, 6, 11), \
        "the survivor did not start the dead member's partitions at its commits"
    desc = kc.describe_group(bs, group)
    assert desc.state == ConsumerGroupState.STABLE
    assert [mb.client_id for mb in desc.members] == ["survivor"]


# --------------------------------------------------------------------------
# 3. three client libraries in one group
# --------------------------------------------------------------------------

@pytest.mark.slow
@pytest.mark.timeout(180)
def test_three_client_libraries_share_one_group(make_broker, members):
    """A confluent-kafka member (assignors range,roundrobin by default), a
    kafka-python member (range, roundrobin) and an aiokafka member (roundrobin
    only) join one group in turn. The coordinator picks the one protocol every
    member supports (roundrobin): 6 partitions split 2/2/2, DescribeGroups shows
    each member's client id and the assignment that member received, and the
    three together read every record exactly once, each only from its own
    partitions."""
    broker = make_broker(FAST_JOIN)
    bs = broker.bootstrap
    topic = kc.create_topic(bs, unique("g-three"), partitions=6)
    group = unique("g-three")

    cf = join(members, ConfluentMember(bs, group, [topic], name="it-confluent"))
    wait_for([cf], owns(cf, range(6)), 30, "the confluent member to own all 6 partitions")
    kp = join(members, KafkaPythonMember(bs, group, [topic], name="it-kafka-python"))
    wait_for([cf, kp], split([cf, kp], 6, [3, 3]), 40, "a 3 + 3 split between confluent and kafka-python")
    aio = join(members, AiokafkaMember(bs, group, [topic], name="it-aiokafka"))
    trio = [cf, kp, aio]
    wait_for(trio, split(trio, 6, [2, 2, 2]), 60, "a 2 + 2 + 2 split between the three clients")

    def described():
        desc = kc.describe_group(bs, group)
        if desc.state != ConsumerGroupState.STABLE or len(desc.members) != 3:
            return None
        return desc
    desc = wait_for(trio, described, 20, "DescribeGroups to show a Stable group of 3")
    assert desc.partition_assignor == "roundrobin", \
        f"the only protocol all three support is roundrobin, the group chose {desc.partition_assignor!r}"
    assert not desc.is_simple_consumer_group
    by_client = {mb.client_id: mb for mb in desc.members}
    assert set(by_client) == {m.name for m in trio}
    for m in trio:
        got = {(tp.topic, tp.partition) for tp in by_client[m.name].assignment.topic_partitions}
        assert got == m.assignment(), f"{m.name}: described {sorted(got)}, the client has {sorted(m.assignment())}"

    recs = [Rec(value=f"v{i}".encode(), key=f"k{i}".encode(), partition=i % 6) for i in range(60)]
    kc.produce_aiokafka(bs, topic, recs)
    wait_for(trio, lambda: sum(len(m.records()) for m in trio) >= 60, 30, "60 records between the three members")
    settle(trio)
    for m in trio:
        got = m.records()
        assert {r.partition for r in got} <= m.partitions(), f"{m.name} read a partition it does not own"
        assert len(got) == 20, f"{m.name} read {len(got)} records, expected its 2 partitions x 10"
    everything = [r for m in trio for r in m.records()]
    assert positions(everything) == span(range(6), 0, 10), "records lost or read twice"
    assert sorted(r.value for r in everything) == sorted(r.value for r in recs)


# --------------------------------------------------------------------------
# 4. no common assignor
# --------------------------------------------------------------------------

@pytest.mark.slow
@pytest.mark.parametrize("client", ["kafka-python", "confluent"])
def test_member_without_a_common_assignor_is_rejected(make_broker, members, client):
    """A Stable group whose member supports only "range"; a second consumer that
    supports only "roundrobin" gets INCONSISTENT_GROUP_PROTOCOL from JoinGroup
    (kafka-python raises InconsistentGroupProtocolError from poll();
    confluent-kafka delivers it as a consumer error from poll()). It is never
    added: the first member is not rebalanced and keeps all partitions, and the
    group still has one member and protocol range."""
    broker = make_broker(FAST_JOIN)
    bs = broker.bootstrap
    topic = kc.create_topic(bs, unique("g-assignor"), partitions=4)
    group = unique("g-assignor")
    first = join(members, ConfluentMember(bs, group, [topic], name="range-only",
                                          config={"partition.assignment.strategy": "range"}))
    wait_for([first], owns(first, range(4)), 30, "the range-only member to own all partitions")
    assigns_before = first.assign_events

    if client == "kafka-python":
        second = join(members, KafkaPythonMember(bs, group, [topic], name="roundrobin-only",
                                                 config={"partition_assignment_strategy": [RoundRobinPartitionAssignor]}))

        def rejected(e):
            return isinstance(e, kafka.errors.InconsistentGroupProtocolError)
    else:
        second = join(members, ConfluentMember(bs, group, [topic], name="roundrobin-only",
                                               config={"partition.assignment.strategy": "roundrobin"}))

        def rejected(e):
            return isinstance(e, KafkaError) and e.code() == KafkaError.INCONSISTENT_GROUP_PROTOCOL

    wait_for([first, second], lambda: second.errors(), 30, "the roundrobin-only member to report an error")
    errors = second.errors()
    assert rejected(errors[0]), f"expected INCONSISTENT_GROUP_PROTOCOL, the {client} member reported {errors[:3]}"
    hold_still([first, second], 2.0, "after the rejected join")
    assert not second.assignment(), "the rejected member got partitions"
    assert first.partitions() == set(range(4))
    assert first.assign_events == assigns_before, "the Stable member was rebalanced by a join that was rejected"
    desc = kc.describe_group(bs, group)
    assert desc.state == ConsumerGroupState.STABLE
    assert desc.partition_assignor == "range"
    assert [mb.client_id for mb in desc.members] == ["range-only"]


# --------------------------------------------------------------------------
# 5. group admin
# --------------------------------------------------------------------------

def _alter_error(a, group: str, tps: list[TopicPartition]):
    """The error code AlterConsumerGroupOffsets reports (group-level or the
    partitions' one), or None on success."""
    try:
        res = a.alter_consumer_group_offsets([ConsumerGroupTopicPartitions(group, tps)],
                                             request_timeout=15)[group].result(timeout=30)
    except KafkaException as exc:
        return exc.args[0].code()
    codes = {tp.error.code() for tp in res.topic_partitions if tp.error is not None}
    assert len(codes) <= 1, codes
    return codes.pop() if codes else None


@pytest.mark.slow
@pytest.mark.timeout(180)
def test_group_admin_describe_list_alter_and_delete_offsets(make_broker, members):
    """Through the admin APIs:
    - DescribeGroups of a group with two members: Stable, protocol type
      consumer, assignor roundrobin, the coordinator is this broker, each
      member's client id, host (Kafka's "/127.0.0.1") and member id, and
      disjoint assignments covering the topic that match the members' own;
    - ListGroups filtered by state: STABLE lists only the active group, EMPTY
      only the empty one;
    - AlterConsumerGroupOffsets resets an empty group (a new member then starts
      exactly there), and fails with UNKNOWN_MEMBER_ID on an active group;
    - OffsetDelete (kafka-python) removes offsets of an empty group; on an
      active group it fails per partition with GROUP_SUBSCRIBED_TO_TOPIC for a
      subscribed topic and succeeds for a topic the group does not subscribe to;
    - DeleteGroups of [empty, active, unknown] in one request: deleted,
      NON_EMPTY_GROUP, GROUP_ID_NOT_FOUND."""
    broker = make_broker(FAST_JOIN)
    bs = broker.bootstrap
    a = kc.admin(bs)
    topic = kc.create_topic(bs, unique("g-admin"), partitions=4)
    other = kc.create_topic(bs, unique("g-admin-other"), partitions=1)
    produce_spread(bs, topic, 4, 10, "admin")
    active, empty = unique("g-active"), unique("g-empty")

    rr = {"partition.assignment.strategy": "roundrobin"}
    ma = join(members, ConfluentMember(bs, active, [topic], name="felice-admin-a", config=rr))
    wait_for([ma], owns(ma, range(4)), 30, "the first member to own all partitions")
    mb = join(members, ConfluentMember(bs, active, [topic], name="felice-admin-b", config=rr))
    wait_for([ma, mb], split([ma, mb], 4, [2, 2]), 40, "a 2 + 2 split")
    ma.commit({**{(topic, p): 5 for p in ma.partitions()}, (other, 0): 1})

    desc = kc.describe_group(bs, active, a)
    assert desc.group_id == active
    assert desc.state == ConsumerGroupState.STABLE
    assert not desc.is_simple_consumer_group, "protocol type consumer"
    assert desc.partition_assignor == "roundrobin"
    assert (desc.coordinator.host, desc.coordinator.port) == (broker.host, broker.port)
    by_client = {m.client_id: m for m in desc.members}
    assert set(by_client) == {"felice-admin-a", "felice-admin-b"}
    covered = []
    for member in (ma, mb):
        d = by_client[member.name]
        assert d.member_id == member.member_id()
        assert d.host == "/127.0.0.1", f"member host {d.host!r}; Kafka reports the client address as /IP"
        assert d.group_instance_id is None
        got = {(tp.topic, tp.partition) for tp in d.assignment.topic_partitions}
        assert got == member.assignment()
        covered += sorted(got)
    assert sorted(covered) == [(topic, p) for p in range(4)], "assignments overlap or leave partitions out"

    # an empty group: one member commits and leaves
    me = join(members, ConfluentMember(bs, empty, [topic], name="felice-admin-e"))
    wait_for([me], owns(me, range(4)), 30, "the empty group's member to own all partitions")
    me.commit({(topic, p): 2 for p in range(4)})
    me.close()

    stable = kc.list_groups(bs, {ConsumerGroupState.STABLE}, a)
    assert active in stable and empty not in stable, sorted(stable)
    assert stable[active].state == ConsumerGroupState.STABLE
    empties = kc.list_groups(bs, {ConsumerGroupState.EMPTY}, a)
    assert empty in empties and active not in empties, sorted(empties)
    assert empties[empty].state == ConsumerGroupState.EMPTY
    assert not empties[empty].is_simple_consumer_group, NOT_SIMPLE
    both = kc.list_groups(bs, {ConsumerGroupState.STABLE, ConsumerGroupState.EMPTY}, a)
    assert {active, empty} <= set(both)

    # reset the empty group's offsets
    reset = {0: 7, 1: 0, 2: 10, 3: 3}
    assert _alter_error(a, empty, [TopicPartition(topic, p, o) for p, o in reset.items()]) is None
    assert kc.committed_offsets(bs, empty, a) == {(topic, p): o for p, o in reset.items()}
    # an active group's offsets cannot be altered from outside
    before = kc.committed_offsets(bs, active, a)
    assert _alter_error(a, active, [TopicPartition(topic, 0, 0)]) == KafkaError.UNKNOWN_MEMBER_ID
    assert kc.committed_offsets(bs, active, a) == before

    md = join(members, ConfluentMember(bs, empty, [topic], name="felice-admin-d"))
    wait_for([md], lambda: len(md.records()) >= 20, 30, "the new member to read from the reset offsets")
    settle([md])
    assert positions(md.records()) == sorted(span([0], 7, 10) + span([1], 0, 10) + span([3], 3, 10))
    md.close()

    # OffsetDelete
    ka = kafka_admin(bs)
    try:
        tp = kafka.TopicPartition
        assert ka.delete_group_offsets(empty, [tp(topic, 0), tp(topic, 1)]) == \
            {tp(topic, 0): kafka.errors.NoError, tp(topic, 1): kafka.errors.NoError}
        assert kc.committed_offsets(bs, empty, a) == {(topic, 2): 10, (topic, 3): 3}
        got = ka.delete_group_offsets(active, [tp(topic, 0), tp(other, 0)])
        assert got == {tp(topic, 0): kafka.errors.GroupSubscribedToTopicError, tp(other, 0): kafka.errors.NoError}, got
    finally:
        ka.close()
    after = kc.committed_offsets(bs, active, a)
    assert (other, 0) not in after
    assert after == {k: v for k, v in before.items() if k != (other, 0)}

    # DeleteGroups, three groups in one request
    missing = unique("g-never")
    futures = a.delete_consumer_groups([empty, active, missing], request_timeout=15)
    futures[empty].result(timeout=30)
    codes = {}
    for g in (active, missing):
        with pytest.raises(KafkaException) as info:
            futures[g].result(timeout=30)
        codes[g] = info.value.args[0].code()
    assert codes == {active: KafkaError.NON_EMPTY_GROUP, missing: KafkaError.GROUP_ID_NOT_FOUND}
    listed = kc.list_groups(bs, a=a)
    assert empty not in listed and active in listed
    assert kc.committed_offsets(bs, empty, a) == {}
    ma.check_alive()
    mb.check_alive()


# --------------------------------------------------------------------------
# 6. the coordinator's answers on the wire
# --------------------------------------------------------------------------

API_OFFSET_FETCH = 9
API_FIND_COORDINATOR = 10
API_JOIN_GROUP = 11
API_HEARTBEAT = 12
API_LEAVE_GROUP = 13
API_SYNC_GROUP = 14
WIRE_VERSIONS = {API_OFFSET_FETCH: 5, API_FIND_COORDINATOR: 4, API_JOIN_GROUP: 5, API_HEARTBEAT: 3,
                 API_LEAVE_GROUP: 3, API_SYNC_GROUP: 3}


def _i8(v: int) -> bytes:
    return struct.pack(">b", v)


def _i16(v: int) -> bytes:
    return struct.pack(">h", v)


def _i32(v: int) -> bytes:
    return struct.pack(">i", v)


def _bytes(b: bytes | None) -> bytes:
    return _i32(-1) if b is None else _i32(len(b)) + b


def _array(items: list[bytes]) -> bytes:
    return _i32(len(items)) + b"".join(items)


def _compact_array(items: list[bytes]) -> bytes:
    return rawwire.uvarint(len(items) + 1) + b"".join(items)


class WireReader(rawwire.Reader):
    def int8(self) -> int:
        return self._take(">b")

    def int64(self) -> int:
        return self._take(">q")

    def _raw(self, n: int) -> bytes:
        out = self.data[self.pos:self.pos + n]
        assert len(out) == n, "response ends early"
        self.pos += n
        return out

    def string(self) -> str | None:
        n = self.int16()
        return None if n < 0 else self._raw(n).decode()

    def bytes_(self) -> bytes | None:
        n = self.int32()
        return None if n < 0 else self._raw(n)

    def uvarint(self) -> int:
        shift = result = 0
        while True:
            b = self._raw(1)[0]
            result |= (b & 0x7F) << shift
            if not b & 0x80:
                return result
            shift += 7

    def compact_string(self) -> str | None:
        n = self.uvarint() - 1
        return None if n < 0 else self._raw(n).decode()

    def compact_array(self, item) -> list:
        n = self.uvarint() - 1
        return [item() for _ in range(max(n, 0))]

    def skip_tags(self):
        for _ in range(self.uvarint()):
            self.uvarint()
            self._raw(self.uvarint())

    def assert_done(self, what: str):
        assert self.pos == len(self.data), f"{what}: {len(self.data) - self.pos} unread bytes at the end"


def _call(conn: rawwire.Connection, api: int, body: bytes, flexible: bool = False) -> WireReader:
    r = conn.request(api, WIRE_VERSIONS[api], body, flexible=flexible)
    w = WireReader(r.data)
    w.pos = r.pos
    if flexible:
        w.skip_tags()             # response header v1
    return w


def _find_coordinators(conn, keys: list[str]) -> dict[str, dict]:
    """FindCoordinator v4 (batched, KIP-699), key type 0 (group)."""
    body = _i8(0) + _compact_array([rawwire.compact_string(k) for k in keys]) + rawwire.uvarint(0)
    r = _call(conn, API_FIND_COORDINATOR, body, flexible=True)
    r.int32()                     # throttle_time_ms

    def coordinator():
        c = {"key": r.compact_string(), "node_id": r.int32(), "host": r.compact_string(), "port": r.int32(),
             "error": r.int16(), "message": r.compact_string()}
        r.skip_tags()
        return c
    coords = r.compact_array(coordinator)
    r.skip_tags()
    r.assert_done("FindCoordinator v4")
    assert len(coords) == len(keys), f"{len(coords)} coordinators for {len(keys)} keys: {coords}"
    return {c["key"]: c for c in coords}


def _subscription(topic: str) -> bytes:
    """ConsumerProtocolSubscription v0: one topic, no user data."""
    return _i16(0) + _array([rawwire.string(topic)]) + _bytes(None)


def _assignment(topic: str, partitions: list[int]) -> bytes:
    """ConsumerProtocolAssignment v0."""
    return _i16(0) + _array([rawwire.string(topic) + _array([_i32(p) for p in partitions])]) + _bytes(None)


def _join(conn, group: str, member_id: str, protocols: list[tuple[str, bytes]], protocol_type: str = "consumer",
          session_ms: int = 30_000, rebalance_ms: int = 30_000) -> dict:
    """JoinGroup v5."""
    body = (rawwire.string(group) + _i32(session_ms) + _i32(rebalance_ms) + rawwire.string(member_id)
            + rawwire.string(None) + rawwire.string(protocol_type)
            + _array([rawwire.string(name) + _bytes(meta) for name, meta in protocols]))
    r = _call(conn, API_JOIN_GROUP, body)
    r.int32()
    out = {"error": r.int16(), "generation": r.int32(), "protocol": r.string(), "leader": r.string(),
           "member_id": r.string()}
    out["members"] = r.array(lambda: (r.string(), r.string(), r.bytes_()))
    r.assert_done("JoinGroup v5")
    return out


def _sync(conn, group: str, generation: int, member_id: str, assignments: list[tuple[str, bytes]]) -> tuple:
    """SyncGroup v3: (error, assignment bytes)."""
    body = (rawwire.string(group) + _i32(generation) + rawwire.string(member_id) + rawwire.string(None)
            + _array([rawwire.string(m) + _bytes(a) for m, a in assignments]))
    r = _call(conn, API_SYNC_GROUP, body)
    r.int32()
    out = (r.int16(), r.bytes_())
    r.assert_done("SyncGroup v3")
    return out


def _heartbeat(conn, group: str, generation: int, member_id: str) -> int:
    """Heartbeat v3: the error code."""
    body = rawwire.string(group) + _i32(generation) + rawwire.string(member_id) + rawwire.string(None)
    r = _call(conn, API_HEARTBEAT, body)
    r.int32()
    error = r.int16()
    r.assert_done("Heartbeat v3")
    return error


def _leave(conn, group: str, member_ids: list[str]) -> tuple[int, list]:
    """LeaveGroup v3 (batched): (error, [(member_id, instance_id, error)])."""
    body = rawwire.string(group) + _array([rawwire.string(m) + rawwire.string(None) for m in member_ids])
    r = _call(conn, API_LEAVE_GROUP, body)
    r.int32()
    error = r.int16()
    members = r.array(lambda: (r.string(), r.string(), r.int16()))
    r.assert_done("LeaveGroup v3")
    return error, members


def _offset_fetch(conn, group: str, topics: dict[str, list[int]] | None) -> tuple[int, dict]:
    """OffsetFetch v5: (error, {(topic, partition): (offset, leader_epoch, metadata, error)})."""
    if topics is None:
        body = rawwire.string(group) + _i32(-1)
    else:
        body = rawwire.string(group) + _array([rawwire.string(t) + _array([_i32(p) for p in ps])
                                               for t, ps in topics.items()])
    r = _call(conn, API_OFFSET_FETCH, body)
    r.int32()
    out = {}

    def topic():
        name = r.string()
        for p, off, epoch, meta, err in r.array(lambda: (r.int32(), r.int64(), r.int32(), r.string(), r.int16())):
            out[(name, p)] = (off, epoch, meta, err)
    r.array(topic)
    error = r.int16()
    r.assert_done("OffsetFetch v5")
    return error, out


@pytest.mark.slow
def test_coordinator_error_codes_on_the_wire(make_broker):
    """Raw requests, checked against Kafka's answers:
    - FindCoordinator v4 with several group keys: one entry per key, each
      this broker (COORDINATOR_NOT_AVAILABLE while the offsets topic is being
      created is retried);
    - JoinGroup v5 with an empty member id: MEMBER_ID_REQUIRED with a member id
      and generation -1; the rejoin with that id makes us the leader of
      generation >= 1 with protocol range and our subscription;
    - SyncGroup with a wrong generation: ILLEGAL_GENERATION; with an unknown
      member: UNKNOWN_MEMBER_ID; the leader's SyncGroup returns its assignment;
    - Heartbeat: NONE; unknown member: UNKNOWN_MEMBER_ID; wrong generation:
      ILLEGAL_GENERATION;
    - JoinGroup with another protocol type or no common protocol:
      INCONSISTENT_GROUP_PROTOCOL; a session timeout outside
      [group.min.session.timeout.ms, group.max.session.timeout.ms]:
      INVALID_SESSION_TIMEOUT; an empty group id: INVALID_GROUP_ID;
    - OffsetFetch of an unknown group (or of partitions nobody committed):
      offset -1, no error; for all topics: no topics, no error;
    - LeaveGroup v3: per-member errors (NONE for us, UNKNOWN_MEMBER_ID for a
      stranger), and a member that left is unknown to Heartbeat."""
    broker = make_broker(FAST_JOIN)
    bs = broker.bootstrap
    topic = kc.create_topic(bs, unique("g-wire"), partitions=2)
    (node_id,) = kc.admin(bs).list_topics(timeout=10).brokers.keys()
    group = unique("g-wire")
    with rawwire.Connection(broker.host, broker.port, timeout=40) as conn:
        error, ranges = conn.api_versions()
        assert error == 0
        for api, version in WIRE_VERSIONS.items():
            lo, hi = ranges.get(api, (None, None))
            assert lo is not None and lo <= version <= hi, f"API {api}: advertised {lo}..{hi}, need v{version}"

        keys = [group, unique("g-wire-other"), unique("g-wire-third")]

        def found():
            got = _find_coordinators(conn, keys)
            errors = {c["error"] for c in got.values()}
            assert errors <= {NONE, COORDINATOR_NOT_AVAILABLE, COORDINATOR_LOAD_IN_PROGRESS}, got
            return got if errors == {NONE} else None
        coords = wait_until(found, 30, "FindCoordinator to answer for every key")
        assert set(coords) == set(keys)
        for c in coords.values():
            assert (c["node_id"], c["host"], c["port"]) == (node_id, broker.host, broker.port), c

        sub = _subscription(topic)
        first = _join(conn, group, "", [("range", sub)])
        assert first["error"] == MEMBER_ID_REQUIRED, first
        assert first["member_id"], "MEMBER_ID_REQUIRED must carry the member id to rejoin with"
        assert first["generation"] == -1, first
        me = first["member_id"]

        joined = _join(conn, group, me, [("range", sub)])
        assert joined["error"] == NONE, joined
        assert joined["member_id"] == me and joined["leader"] == me
        assert joined["protocol"] == "range"
        assert joined["generation"] >= 1
        assert joined["members"] == [(me, None, sub)], "the leader gets every member's subscription"
        gen = joined["generation"]

        assignment = _assignment(topic, [0, 1])
        assert _sync(conn, group, gen + 1, me, [(me, assignment)])[0] == ILLEGAL_GENERATION
        assert _sync(conn, group, gen, "no-such-member", [])[0] == UNKNOWN_MEMBER_ID
        assert _sync(conn, group, gen, me, [(me, assignment)]) == (NONE, assignment)

        assert _heartbeat(conn, group, gen, me) == NONE
        assert _heartbeat(conn, group, gen, "no-such-member") == UNKNOWN_MEMBER_ID
        assert _heartbeat(conn, group, gen + 1, me) == ILLEGAL_GENERATION

        assert _join(conn, group, "", [("range", sub)], protocol_type="connect")["error"] == \
            INCONSISTENT_GROUP_PROTOCOL
        assert _join(conn, group, "", [("roundrobin", sub)])["error"] == INCONSISTENT_GROUP_PROTOCOL
        assert _heartbeat(conn, group, gen, me) == NONE, "a rejected join changed the group"

        fresh = unique("g-wire-fresh")
        assert _join(conn, fresh, "", [("range", sub)], session_ms=5999)["error"] == INVALID_SESSION_TIMEOUT
        assert _join(conn, fresh, "", [("range", sub)], session_ms=1_800_001)["error"] == INVALID_SESSION_TIMEOUT
        assert _join(conn, "", "", [("range", sub)])["error"] == INVALID_GROUP_ID

        unknown = unique("g-wire-unknown")
        error, got = _offset_fetch(conn, unknown, {topic: [0, 1]})
        assert error == NONE
        assert set(got) == {(topic, 0), (topic, 1)}
        for key, (off, epoch, meta, err) in got.items():
            assert (off, epoch, err) == (-1, -1, NONE), (key, got[key])
            assert meta in ("", None), (key, meta)
        assert _offset_fetch(conn, unknown, None) == (NONE, {})
        error, got = _offset_fetch(conn, group, {topic: [0]})
        assert error == NONE and got[(topic, 0)][0] == -1 and got[(topic, 0)][3] == NONE

        error, left = _leave(conn, group, [me, "no-such-member"])
        assert error == NONE
        assert sorted(left) == sorted([(me, None, NONE), ("no-such-member", None, UNKNOWN_MEMBER_ID)])
        assert _heartbeat(conn, group, gen, me) == UNKNOWN_MEMBER_ID
    desc = wait_until(lambda: (d := kc.describe_group(bs, group)).state == ConsumerGroupState.EMPTY and d, 15,
                      "the group to be Empty after its only member left")
    assert not desc.members


# --------------------------------------------------------------------------
# 7. static membership
# --------------------------------------------------------------------------

@pytest.mark.slow
@pytest.mark.timeout(180)
def test_static_member_gone_beyond_its_session_is_replaced_then_rejoins(make_broker, members):
    """A static member (group.instance.id) closes: it sends no LeaveGroup, so
    nothing moves at first; once its session.timeout.ms (6000) runs out the
    coordinator removes it and the other member gets every partition. When the
    static member comes back with the same group.instance.id it joins again and
    the partitions are split again; DescribeGroups shows its instance id."""
    broker = make_broker(FAST_JOIN)
    bs = broker.bootstrap
    topic = kc.create_topic(bs, unique("g-static"), partitions=4)
    group = unique("g-static")
    instance = f"{group}-instance"
    base = {"session.timeout.ms": 6000, "heartbeat.interval.ms": 1000}
    dynamic = join(members, ConfluentMember(bs, group, [topic], name="dynamic", config=base))
    wait_for([dynamic], owns(dynamic, range(4)), 30, "the dynamic member to own all partitions")
    static = join(members, ConfluentMember(bs, group, [topic], name="static",
                                           config={**base, "group.instance.id": instance}))
    wait_for([dynamic, static], split([dynamic, static], 4, [2, 2]), 40, "a 2 + 2 split")
    desc = kc.describe_group(bs, group)
    assert {m.client_id: m.group_instance_id for m in desc.members} == {"dynamic": None, "static": instance}

    static.close()
    hold_still([dynamic], 2.5, "right after the static member closed (no LeaveGroup, session.timeout.ms=6000)")
    wait_for([dynamic], owns(dynamic, range(4)), 60,
             "the dynamic member to get every partition once the static member's session expired")
    desc = kc.describe_group(bs, group)
    assert [m.client_id for m in desc.members] == ["dynamic"]

    back = join(members, ConfluentMember(bs, group, [topic], name="static",
                                         config={**base, "group.instance.id": instance}))
    wait_for([dynamic, back], split([dynamic, back], 4, [2, 2]), 40, "a 2 + 2 split after the static member rejoined")
    desc = kc.describe_group(bs, group)
    assert {m.client_id: m.group_instance_id for m in desc.members} == {"dynamic": None, "static": instance}
    assert {m.member_id for m in desc.members if m.group_instance_id == instance} == {back.member_id()}


@pytest.mark.slow
@pytest.mark.timeout(180)
def test_second_consumer_with_the_same_instance_id_fences_the_first(make_broker, members):
    """Two live consumers with the same group.instance.id: the newer one takes
    over the static member's place (and its member id slot), and the older one
    is fenced: its next heartbeat gets FENCED_INSTANCE_ID, which librdkafka
    raises as a fatal consumer error. The group ends with two members (the
    dynamic leader and the newer static one), all partitions covered."""
    broker = make_broker(FAST_JOIN)
    bs = broker.bootstrap
    topic = kc.create_topic(bs, unique("g-fenced"), partitions=4)
    group = unique("g-fenced")
    instance = f"{group}-x"
    base = {"session.timeout.ms": 10_000, "heartbeat.interval.ms": 1000}
    # A dynamic member joins first and stays the leader, so the newcomer is a
    # plain (non-leader) static member taking over a known instance id.
    leader = join(members, ConfluentMember(bs, group, [topic], name="leader", config=base))
    wait_for([leader], owns(leader, range(4)), 30, "the dynamic member to own all partitions")
    old = join(members, ConfluentMember(bs, group, [topic], name="static-old",
                                        config={**base, "group.instance.id": instance}))
    wait_for([leader, old], split([leader, old], 4, [2, 2]), 40, "a 2 + 2 split")

    new = join(members, ConfluentMember(bs, group, [topic], name="static-new",
                                        config={**base, "group.instance.id": instance}))

    def fenced():
        for e in old.errors():
            # librdkafka makes FENCED_INSTANCE_ID a fatal error and reports it as _FATAL
            if isinstance(e, KafkaError) and (e.fatal() or e.code() in FENCED_CODES):
                return e
        return None
    err = wait_for([leader, new], fenced, 40, "the older consumer to be fenced")
    assert "fenced" in str(err).lower() or err.code() in (KafkaError.FENCED_INSTANCE_ID, KafkaError._FENCED), \
        f"fatal error, but not the fencing one: {err}"
    assert not new.errors(), f"the newer consumer reported errors: {new.errors()[:3]}"
    wait_for([leader, new], split([leader, new], 4, [2, 2]), 40, "the newer static consumer to hold 2 partitions")

    desc = kc.describe_group(bs, group)
    assert desc.state == ConsumerGroupState.STABLE
    static_members = [m for m in desc.members if m.group_instance_id == instance]
    assert len(desc.members) == 2 and len(static_members) == 1, [(m.client_id, m.member_id) for m in desc.members]
    assert static_members[0].member_id == new.member_id()
    assert static_members[0].client_id == "static-new"


# --------------------------------------------------------------------------
# 8. kcat's balanced consumer
# --------------------------------------------------------------------------

@pytest.fixture(scope="module")
def kcat() -> str:
    path = shutil.which("kcat") or shutil.which("kafkacat")
    if path is None:
        pytest.skip("neither kcat nor kafkacat is on PATH: the kcat -G balanced-consumer test needs it")
    return path


def _kcat_group_read(kcat: str, bootstrap: str, group: str, topic: str, timeout: float = 60) -> list[tuple]:
    """kcat -G (librdkafka's KafkaConsumer: join, sync, fetch from committed
    offsets, auto-commit on close) until the end of every assigned partition
    (-e). No -o: with -G, -o would override the committed offsets."""
    cmd = [kcat, "-b", bootstrap, "-G", group, "-q", "-e",
           "-X", "auto.offset.reset=earliest", "-X", "enable.partition.eof=true",
           "-f", "%p %o %s\\n", topic]
    try:
        res = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired as exc:
        raise AssertionError(f"{' '.join(cmd)} still running after {timeout}s; stderr: {exc.stderr}") from None
    assert res.returncode == 0, f"{' '.join(cmd)} exited {res.returncode}\nstdout:\n{res.stdout}\nstderr:\n{res.stderr}"
    out = []
    for line in res.stdout.splitlines():
        p, o, value = line.split(" ", 2)
        out.append((int(p), int(o), value))
    return sorted(out)


@pytest.mark.slow
@pytest.mark.timeout(180)
def test_kcat_balanced_consumer_commits_and_resumes(make_broker, kcat):
    """kcat -G reads every record of a 3-partition topic, and its offsets are
    committed when it leaves (admin shows the high watermarks, the group is
    Empty); a second run reads nothing, a third reads exactly the records
    produced since."""
    broker = make_broker(FAST_JOIN)
    bs = broker.bootstrap
    topic = kc.create_topic(bs, unique("g-kcat"), partitions=3)
    group = unique("g-kcat")
    produce_spread(bs, topic, 3, 4, "kcat")

    first = _kcat_group_read(kcat, bs, group, topic)
    assert first == sorted((p, i, f"kcat-p{p}-{i}") for p in range(3) for i in range(4))
    assert kc.committed_offsets(bs, group) == {(topic, p): 4 for p in range(3)}
    listed = kc.list_groups(bs)
    assert group in listed and listed[group].state == ConsumerGroupState.EMPTY
    assert not listed[group].is_simple_consumer_group, NOT_SIMPLE

    assert _kcat_group_read(kcat, bs, group, topic) == [], "a second run re-read committed records"

    produce_spread(bs, topic, 3, 2, "more")
    third = _kcat_group_read(kcat, bs, group, topic)
    assert third == sorted((p, 4 + i, f"more-p{p}-{i}") for p in range(3) for i in range(2))
    assert kc.committed_offsets(bs, group) == {(topic, p): 6 for p in range(3)}


# --------------------------------------------------------------------------
# 9. offset expiry
# --------------------------------------------------------------------------

@pytest.mark.slow
@pytest.mark.timeout(300)
def test_offsets_of_an_empty_group_expire(make_broker, members):
    """With offsets.retention.minutes=1 (checked every second): the offsets of a
    consumer group that became Empty expire about a minute after it emptied,
    and those of a simple group (commits without joining) about a minute after
    the commit; not before (no sooner than 45 s here), and then both groups are
    gone from ListGroups. A Stable group's offsets for its subscribed topic
    never expire while it is active."""
    broker = make_broker({**FAST_JOIN, "offsets.retention.minutes": "1", "offsets.retention.check.interval.ms": "1000"})
    bs = broker.bootstrap
    topic = kc.create_topic(bs, unique("g-expire"), partitions=2)
    produce_spread(bs, topic, 2, 3, "expire")
    leaving, simple, active = unique("g-leaving"), unique("g-simple"), unique("g-active")

    stays = join(members, ConfluentMember(bs, active, [topic], name="stays", commit_each=True))
    wait_for([stays], lambda: len(stays.records()) >= 6, 30, "the active member to read and commit 6 records")

    m = join(members, KafkaPythonMember(bs, leaving, [topic], name="leaves"))
    wait_for([m], owns(m, {0, 1}), 30, "the leaving member to own both partitions")
    m.commit({(topic, 0): (3, "bye"), (topic, 1): (1, "bye")})
    m.close()
    emptied = time.monotonic()
    simple_consumer = Consumer({"bootstrap.servers": bs, "group.id": simple, "enable.auto.commit": False})
    try:
        res = simple_consumer.commit(offsets=[TopicPartition(topic, 1, 2)], asynchronous=False)
        assert all(tp.error is None for tp in res), res
    finally:
        simple_consumer.close()

    a = kc.admin(bs)
    assert kc.committed_metadata(bs, leaving) == {(topic, 0): (3, "bye"), (topic, 1): (1, "bye")}
    assert kc.committed_offsets(bs, simple, a) == {(topic, 1): 2}
    listed = kc.list_groups(bs, a=a)
    assert listed[leaving].state == ConsumerGroupState.EMPTY and listed[simple].state == ConsumerGroupState.EMPTY
    assert listed[active].state == ConsumerGroupState.STABLE

    def expired():
        stays.check_alive()
        return not kc.committed_offsets(bs, leaving, a) and not kc.committed_offsets(bs, simple, a)
    wait_until(expired, 150, "the offsets of the empty and the simple group to expire", interval=1.0)
    elapsed = time.monotonic() - emptied
    assert elapsed >= 45, f"offsets expired {elapsed:.0f}s after the group emptied; retention is 1 minute"
    wait_until(lambda: not {leaving, simple} & set(kc.list_groups(bs, a=a)), 30,
               "the expired groups to disappear from ListGroups", interval=0.5)

    assert kc.committed_offsets(bs, active, a) == {(topic, 0): 3, (topic, 1): 3}, \
        "a Stable group's offsets expired"
    listed = kc.list_groups(bs, a=a)
    assert listed[active].state == ConsumerGroupState.STABLE
    stays.check_alive()
