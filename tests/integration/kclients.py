"""The same small produce/consume/admin operations for each real client
(confluent-kafka on librdkafka, kafka-python, aiokafka), bounded in time, so a
test can say "produce with X, consume with Y" and compare field by field.

The broker has no consumer groups yet: consumers assign partitions and seek,
with auto-commit off. librdkafka insists on a group.id even then; it is never
joined.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from dataclasses import dataclass

import aiokafka
import kafka
from aiokafka.structs import TopicPartition as AioTopicPartition
from confluent_kafka import (OFFSET_BEGINNING, TIMESTAMP_CREATE_TIME, TIMESTAMP_LOG_APPEND_TIME, Consumer,
                             ConsumerGroupTopicPartitions, KafkaError, Producer, TopicPartition)
from confluent_kafka.admin import AdminClient, NewTopic

from harness import wait_until

CLIENTS = ("confluent", "kafka-python", "aiokafka")

Headers = tuple[tuple[str, bytes], ...]


@dataclass(frozen=True)
class Rec:
    value: bytes | None
    key: bytes | None = None
    headers: Headers = ()
    timestamp: int | None = None          # CreateTime, ms since epoch; None = the client picks
    partition: int | None = None


@dataclass(frozen=True)
class Consumed:
    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: Headers
    timestamp: int
    timestamp_type: str                   # "create", "log_append" or "none"


@dataclass(frozen=True)
class Delivered:
    partition: int
    offset: int                           # -1 when unknown (acks=0)


def _headers(hs) -> Headers:
    return tuple((k, bytes(v) if v is not None else None) for k, v in (hs or ()))


def group_id() -> str:
    return f"it-unused-{uuid.uuid4().hex[:10]}"


# --------------------------------------------------------------------------
# admin (confluent-kafka AdminClient)
# --------------------------------------------------------------------------

def admin(bootstrap: str) -> AdminClient:
    return AdminClient({"bootstrap.servers": bootstrap})


def create_topic(bootstrap: str, name: str, partitions: int = 1, config: dict | None = None) -> str:
    a = admin(bootstrap)
    futures = a.create_topics([NewTopic(name, num_partitions=partitions, replication_factor=1,
                                        config=config or {})], operation_timeout=20, request_timeout=20)
    futures[name].result(timeout=30)
    wait_for_topic(bootstrap, name, partitions, a)
    return name


def topics(bootstrap: str, a: AdminClient | None = None) -> dict[str, int]:
    """{topic: partition count} from a metadata request for all topics (never auto-creates)."""
    md = (a or admin(bootstrap)).list_topics(timeout=10)
    return {name: len(t.partitions) for name, t in md.topics.items() if t.error is None}


def wait_for_topic(bootstrap: str, name: str, partitions: int, a: AdminClient | None = None,
                   timeout: float = 15.0):
    a = a or admin(bootstrap)

    def ready():
        t = a.list_topics(timeout=10).topics.get(name)
        if t is None or t.error is not None or len(t.partitions) != partitions:
            return None
        return all(p.leader >= 0 for p in t.partitions.values())
    wait_until(ready, timeout, f"topic {name} with {partitions} led partitions in metadata")


def watermarks(bootstrap: str, topic: str, partition: int = 0) -> tuple[int, int]:
    """(low, high) from the broker (ListOffsets earliest/latest), never cached."""
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": group_id(), "enable.auto.commit": False})
    try:
        return tuple(c.get_watermark_offsets(TopicPartition(topic, partition), timeout=10, cached=False))
    finally:
        c.close()


# --------------------------------------------------------------------------
# consumer groups (confluent-kafka AdminClient)
# --------------------------------------------------------------------------

def committed_offsets(bootstrap: str, group: str, a: AdminClient | None = None) -> dict[tuple[str, int], int]:
    """Every offset the group has committed, from OffsetFetch for all topics
    (confluent-kafka AdminClient.list_consumer_group_offsets): {(topic, partition): offset}.
    Metadata is left out: see committed_metadata()."""
    a = a or admin(bootstrap)
    res = a.list_consumer_group_offsets([ConsumerGroupTopicPartitions(group)],
                                        request_timeout=15)[group].result(timeout=30)
    out = {}
    for tp in res.topic_partitions:
        assert tp.error is None, f"group {group}, {tp.topic} [{tp.partition}]: {tp.error}"
        if tp.offset >= 0:
            out[(tp.topic, tp.partition)] = tp.offset
    return out


def committed_metadata(bootstrap: str, group: str) -> dict[tuple[str, int], tuple[int, str]]:
    """Every committed offset of the group with its metadata exactly as the
    broker returns it: {(topic, partition): (offset, metadata)}, through
    kafka-python's admin client (OffsetFetch v8, the batched form).

    Not through confluent-kafka: confluent-kafka-python commits metadata as its
    C string *including* the terminating NUL (strlen + 1 bytes) and reads
    metadata back with strlen, so metadata committed by another client can come
    back from it with trailing garbage. Commit metadata from kafka-python or
    aiokafka when a test compares it."""
    ka = kafka.KafkaAdminClient(bootstrap_servers=bootstrap, client_id="felice-it-admin")
    try:
        res = ka.list_group_offsets({group: None})
    finally:
        ka.close()
    return {(tp.topic, tp.partition): (om.offset, om.metadata if om.metadata is not None else "")
            for tp, om in res.get(group, {}).items() if om.offset >= 0}


def list_groups(bootstrap: str, states: set | None = None, a: AdminClient | None = None) -> dict:
    """{group_id: ConsumerGroupListing} from ListGroups, optionally filtered by
    a set of confluent_kafka.ConsumerGroupState."""
    a = a or admin(bootstrap)
    kwargs = {"request_timeout": 15}
    if states is not None:
        kwargs["states"] = set(states)
    res = a.list_consumer_groups(**kwargs).result(timeout=30)
    assert not res.errors, f"ListGroups errors: {res.errors}"
    return {g.group_id: g for g in res.valid}


def describe_group(bootstrap: str, group: str, a: AdminClient | None = None):
    """The confluent_kafka ConsumerGroupDescription of one group (DescribeGroups)."""
    a = a or admin(bootstrap)
    return a.describe_consumer_groups([group], request_timeout=15)[group].result(timeout=30)


# --------------------------------------------------------------------------
# confluent-kafka
# --------------------------------------------------------------------------

def produce_confluent(bootstrap: str, topic: str, recs: list[Rec], config: dict | None = None,
                      timeout: float = 30.0) -> list[Delivered]:
    conf = {"bootstrap.servers": bootstrap, "linger.ms": 5}
    conf.update(config or {})
    producer = Producer(conf)
    results: list[Delivered | None] = [None] * len(recs)
    errors: list[str] = []

    def on_delivery(index):
        def cb(err, msg):
            if err is not None:
                errors.append(f"record {index}: {err}")
            else:
                results[index] = Delivered(msg.partition(), msg.offset())
        return cb

    for i, rec in enumerate(recs):
        kwargs = {"value": rec.value, "key": rec.key, "on_delivery": on_delivery(i)}
        if rec.headers:
            kwargs["headers"] = list(rec.headers)
        if rec.timestamp is not None:
            kwargs["timestamp"] = rec.timestamp
        if rec.partition is not None:
            kwargs["partition"] = rec.partition
        while True:
            try:
                producer.produce(topic, **kwargs)
                break
            except BufferError:
                producer.poll(0.1)
        producer.poll(0)
    remaining = producer.flush(timeout)
    assert remaining == 0, f"{remaining} records still undelivered after {timeout}s"
    assert not errors, f"delivery failed: {errors[:5]}"
    return results  # type: ignore[return-value]


def _confluent_ts_type(t: int) -> str:
    return {TIMESTAMP_CREATE_TIME: "create", TIMESTAMP_LOG_APPEND_TIME: "log_append"}.get(t, "none")


def from_confluent(msg) -> Consumed:
    ts_type, ts = msg.timestamp()
    return Consumed(msg.topic(), msg.partition(), msg.offset(), msg.key(), msg.value(),
                    _headers(msg.headers()), ts, _confluent_ts_type(ts_type))


def poll_confluent(consumer: Consumer, n: int, timeout: float, settle: float = 0.0) -> list[Consumed]:
    """Poll until n records arrived (then `settle` more seconds to catch extras) or timeout."""
    out: list[Consumed] = []
    deadline = time.monotonic() + timeout
    settle_until = None
    while time.monotonic() < deadline:
        if len(out) >= n:
            settle_until = settle_until or time.monotonic() + settle
            if time.monotonic() >= settle_until:
                break
        msg = consumer.poll(0.2)
        if msg is None:
            continue
        if msg.error():
            if msg.error().code() == KafkaError._PARTITION_EOF:
                continue
            raise AssertionError(f"consumer error: {msg.error()}")
        out.append(from_confluent(msg))
    return out


def confluent_consumer(bootstrap: str, config: dict | None = None) -> Consumer:
    conf = {"bootstrap.servers": bootstrap, "group.id": group_id(), "enable.auto.commit": False,
            "auto.offset.reset": "earliest"}
    conf.update(config or {})
    return Consumer(conf)


def consume_confluent(bootstrap: str, topic: str, partitions: list[int], n: int, timeout: float = 30.0,
                      offsets: dict[int, int] | None = None, config: dict | None = None,
                      settle: float = 0.0) -> list[Consumed]:
    consumer = confluent_consumer(bootstrap, config)
    try:
        consumer.assign([TopicPartition(topic, p, (offsets or {}).get(p, OFFSET_BEGINNING)) for p in partitions])
        return poll_confluent(consumer, n, timeout, settle)
    finally:
        consumer.close()


# --------------------------------------------------------------------------
# kafka-python
# --------------------------------------------------------------------------

def produce_kafka_python(bootstrap: str, topic: str, recs: list[Rec], config: dict | None = None,
                         timeout: float = 30.0) -> list[Delivered]:
    # kafka-python 3's defaults: idempotence on (InitProducerId, acks=all)
    conf = {"bootstrap_servers": bootstrap, "linger_ms": 5}
    conf.update(config or {})
    producer = kafka.KafkaProducer(**conf)
    try:
        futures = [producer.send(topic, value=r.value, key=r.key, headers=list(r.headers) or None,
                                 partition=r.partition, timestamp_ms=r.timestamp) for r in recs]
        producer.flush(timeout=timeout)
        out = []
        for f in futures:
            md = f.get(timeout=timeout)
            out.append(Delivered(md.partition, md.offset))
        return out
    finally:
        producer.close(timeout=10)


def from_kafka_python(r) -> Consumed:
    ts_type = {0: "create", 1: "log_append"}.get(r.timestamp_type, "none")
    return Consumed(r.topic, r.partition, r.offset, r.key, r.value, _headers(r.headers), r.timestamp, ts_type)


def poll_kafka_python(consumer, n: int, timeout: float, settle: float = 0.0) -> list[Consumed]:
    out: list[Consumed] = []
    deadline = time.monotonic() + timeout
    settle_until = None
    while time.monotonic() < deadline:
        if len(out) >= n:
            settle_until = settle_until or time.monotonic() + settle
            if time.monotonic() >= settle_until:
                break
        for records in consumer.poll(timeout_ms=200).values():
            out.extend(from_kafka_python(r) for r in records)
    return out


def consume_kafka_python(bootstrap: str, topic: str, partitions: list[int], n: int, timeout: float = 30.0,
                         offsets: dict[int, int] | None = None, config: dict | None = None,
                         settle: float = 0.0) -> list[Consumed]:
    conf = {"bootstrap_servers": bootstrap, "group_id": None, "enable_auto_commit": False,
            "auto_offset_reset": "earliest"}
    conf.update(config or {})
    consumer = kafka.KafkaConsumer(**conf)
    try:
        tps = [kafka.TopicPartition(topic, p) for p in partitions]
        consumer.assign(tps)
        for tp in tps:
            if offsets and tp.partition in offsets:
                consumer.seek(tp, offsets[tp.partition])
            else:
                consumer.seek_to_beginning(tp)
        return poll_kafka_python(consumer, n, timeout, settle)
    finally:
        consumer.close()


# --------------------------------------------------------------------------
# aiokafka
# --------------------------------------------------------------------------

def run_async(coro, timeout: float = 60.0):
    return asyncio.run(asyncio.wait_for(coro, timeout))


async def _produce_aiokafka(bootstrap, topic, recs, config):
    conf = {"bootstrap_servers": bootstrap, "linger_ms": 5}
    conf.update(config or {})
    producer = aiokafka.AIOKafkaProducer(**conf)
    await producer.start()
    try:
        futures = [await producer.send(topic, value=r.value, key=r.key, partition=r.partition,
                                       timestamp_ms=r.timestamp, headers=list(r.headers) or None)
                   for r in recs]
        metas = await asyncio.gather(*futures)
        return [Delivered(m.partition, m.offset) for m in metas]
    finally:
        await producer.stop()


def produce_aiokafka(bootstrap: str, topic: str, recs: list[Rec], config: dict | None = None,
                     timeout: float = 30.0) -> list[Delivered]:
    return run_async(_produce_aiokafka(bootstrap, topic, recs, config), timeout)


def from_aiokafka(m) -> Consumed:
    ts_type = {0: "create", 1: "log_append"}.get(m.timestamp_type, "none")
    return Consumed(m.topic, m.partition, m.offset, m.key, m.value, _headers(m.headers), m.timestamp, ts_type)


async def _consume_aiokafka(bootstrap, topic, partitions, n, timeout, offsets, config, settle):
    conf = {"bootstrap_servers": bootstrap, "group_id": None, "enable_auto_commit": False,
            "auto_offset_reset": "earliest"}
    conf.update(config or {})
    consumer = aiokafka.AIOKafkaConsumer(**conf)
    await consumer.start()
    try:
        tps = [AioTopicPartition(topic, p) for p in partitions]
        consumer.assign(tps)
        for tp in tps:
            if offsets and tp.partition in offsets:
                consumer.seek(tp, offsets[tp.partition])
            else:
                await consumer.seek_to_beginning(tp)
        out: list[Consumed] = []
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        settle_until = None
        while loop.time() < deadline:
            if len(out) >= n:
                settle_until = settle_until or loop.time() + settle
                if loop.time() >= settle_until:
                    break
            batches = await consumer.getmany(timeout_ms=200)
            for records in batches.values():
                out.extend(from_aiokafka(m) for m in records)
        return out
    finally:
        await consumer.stop()


def consume_aiokafka(bootstrap: str, topic: str, partitions: list[int], n: int, timeout: float = 30.0,
                     offsets: dict[int, int] | None = None, config: dict | None = None,
                     settle: float = 0.0) -> list[Consumed]:
    return run_async(_consume_aiokafka(bootstrap, topic, partitions, n, timeout, offsets, config, settle),
                     timeout + 15)


# --------------------------------------------------------------------------
# dispatch by client name
# --------------------------------------------------------------------------

PRODUCERS = {"confluent": produce_confluent, "kafka-python": produce_kafka_python, "aiokafka": produce_aiokafka}
CONSUMERS = {"confluent": consume_confluent, "kafka-python": consume_kafka_python, "aiokafka": consume_aiokafka}


def produce(client: str, bootstrap: str, topic: str, recs: list[Rec], **kw) -> list[Delivered]:
    return PRODUCERS[client](bootstrap, topic, recs, **kw)


def consume(client: str, bootstrap: str, topic: str, partitions: list[int], n: int, **kw) -> list[Consumed]:
    return CONSUMERS[client](bootstrap, topic, partitions, n, **kw)


# --------------------------------------------------------------------------
# test data and comparisons
# --------------------------------------------------------------------------

def rich_records(partitions: int, per_partition: int, tag: str, base_ts: int) -> list[Rec]:
    """Keyed records with headers (duplicate keys, binary and empty values) and
    explicit CreateTime timestamps, spread over the partitions in turn; one
    null value (tombstone) and one empty value; one record with a null key."""
    recs = []
    for i in range(partitions * per_partition):
        value = {3: None, 4: b""}.get(i, f"{tag}-value-{i}".encode())
        key = None if i == 5 else f"{tag}-key-{i}".encode()
        headers = (("index", str(i).encode()), ("dup", b"first"), ("dup", b"second"),
                   ("bin", bytes([0, 255, i % 256, 10, 13])), ("empty", b""))
        recs.append(Rec(value=value, key=key, headers=headers, timestamp=base_ts + i * 7,
                        partition=i % partitions))
    return recs


def assert_delivered_in_order(recs: list[Rec], delivered: list[Delivered]):
    assert [d.partition for d in delivered] == [r.partition for r in recs]
    for p in sorted({r.partition for r in recs}):
        offsets = [d.offset for d, r in zip(delivered, recs) if r.partition == p]
        assert offsets == list(range(len(offsets))), f"partition {p}: producer saw offsets {offsets}"


def assert_same_records(recs: list[Rec], got: list[Consumed], first_offset: int = 0):
    """Per partition: offsets first_offset.. in send order, same key, value,
    headers (order and duplicates kept) and CreateTime timestamp."""
    assert len(got) == len(recs), f"consumed {len(got)} of {len(recs)} records"
    for p in sorted({r.partition for r in recs}):
        sent = [r for r in recs if r.partition == p]
        seen = sorted((c for c in got if c.partition == p), key=lambda c: c.offset)
        assert [c.offset for c in seen] == list(range(first_offset, first_offset + len(sent))), \
            f"partition {p}: offsets {[c.offset for c in seen]}"
        for c, r in zip(seen, sent):
            assert (c.key, c.value) == (r.key, r.value), f"partition {p} offset {c.offset}: key/value differ"
            assert c.headers == r.headers, f"partition {p} offset {c.offset}: headers {c.headers} != {r.headers}"
            assert c.timestamp == r.timestamp, f"partition {p} offset {c.offset}: timestamp differs"
            assert c.timestamp_type == "create", f"partition {p} offset {c.offset}: {c.timestamp_type}"
