"""Fetch long polling: a waiting fetch completes as soon as data arrives."""

from __future__ import annotations

import json
import threading
import time

from confluent_kafka import OFFSET_BEGINNING, Producer, TopicPartition

import kclients as kc
from harness import unique


def test_long_poll_returns_quickly_when_data_arrives(broker):
    topic = kc.create_topic(broker.bootstrap, unique("longpoll"))
    max_wait_ms = 5000
    consumer = kc.confluent_consumer(broker.bootstrap, {"fetch.wait.max.ms": max_wait_ms, "fetch.min.bytes": 1})
    producer = Producer({"bootstrap.servers": broker.bootstrap, "linger.ms": 0})
    producer.list_topics(topic, timeout=10)           # connection and metadata ready before timing
    sent_at = {}
    parked = threading.Event()

    def produce_later():
        parked.wait(10)
        time.sleep(1.0)                                # let the consumer's fetch sit in the broker
        sent_at["t"] = time.monotonic()
        producer.produce(topic, value=b"wake-up", partition=0)
        producer.flush(10)

    thread = threading.Thread(target=produce_later, daemon=True)
    try:
        consumer.assign([TopicPartition(topic, 0, OFFSET_BEGINNING)])
        assert consumer.poll(0.5) is None              # nothing yet; a fetch is now waiting in the broker
        thread.start()
        parked.set()
        got = kc.poll_confluent(consumer, 1, timeout=max_wait_ms / 1000 + 5)
        received_at = time.monotonic()
        thread.join(10)
    finally:
        consumer.close()
    assert len(got) == 1 and got[0].value == b"wake-up" and got[0].offset == 0
    latency = received_at - sent_at["t"]
    assert latency < 2.0, f"the record reached the waiting consumer after {latency:.2f}s (fetch.wait.max.ms={max_wait_ms})"


def test_empty_fetch_waits_instead_of_spinning(broker):
    """With nothing to return, the broker holds a Fetch for its max wait instead
    of answering at once, so idle consumers do not spin. Counted from
    librdkafka's statistics."""
    topic = kc.create_topic(broker.bootstrap, unique("idle"))
    stats = []
    consumer = kc.confluent_consumer(broker.bootstrap, {"fetch.wait.max.ms": 1000, "fetch.min.bytes": 1,
                                                        "statistics.interval.ms": 500, "stats_cb": stats.append})
    try:
        consumer.assign([TopicPartition(topic, 0, OFFSET_BEGINNING)])
        kc.poll_confluent(consumer, 1, timeout=1.5)       # fetcher started: offset and leader known
        assert stats, "no librdkafka statistics yet"
        start = _fetch_requests(stats[-1])
        assert kc.poll_confluent(consumer, 1, timeout=4.0) == []
        end = _fetch_requests(stats[-1])
    finally:
        consumer.close()
    fetches = end - start
    assert fetches >= 1, "the consumer sent no Fetch at all"
    # honouring a 1 s max wait allows about 4-5 fetches in 4 s
    assert fetches <= 10, f"{fetches} Fetch requests in 4 s with fetch.wait.max.ms=1000: empty fetches return early"


def _fetch_requests(stats_json: str) -> int:
    stats = json.loads(stats_json)
    return sum(b.get("req", {}).get("Fetch", 0) for b in stats.get("brokers", {}).values())


def test_fetch_out_of_range_resets_to_earliest(broker):
    """A position past the end gets OFFSET_OUT_OF_RANGE; the client's
    auto_offset_reset=earliest then reads from offset 0."""
    import kafka
    topic = kc.create_topic(broker.bootstrap, unique("oor"))
    kc.produce_confluent(broker.bootstrap, topic, [kc.Rec(value=f"r{i}".encode(), partition=0) for i in range(3)])
    consumer = kafka.KafkaConsumer(bootstrap_servers=broker.bootstrap, group_id=None, enable_auto_commit=False,
                                   auto_offset_reset="earliest")
    try:
        tp = kafka.TopicPartition(topic, 0)
        consumer.assign([tp])
        consumer.seek(tp, 1000)
        got = kc.poll_kafka_python(consumer, 3, timeout=20, settle=0.3)
    finally:
        consumer.close()
    assert [(c.offset, c.value) for c in got] == [(0, b"r0"), (1, b"r1"), (2, b"r2")]


def test_produce_to_missing_partition_fails_cleanly(broker):
    from confluent_kafka import KafkaError, KafkaException
    topic = kc.create_topic(broker.bootstrap, unique("nopart"), partitions=2)
    producer = Producer({"bootstrap.servers": broker.bootstrap})
    producer.list_topics(topic, timeout=10)
    reports = []
    try:
        producer.produce(topic, value=b"nowhere", partition=5, on_delivery=lambda e, m: reports.append(e))
        assert producer.flush(30) == 0
        assert len(reports) == 1 and reports[0] is not None
        code = reports[0].code()
    except KafkaException as exc:
        code = exc.args[0].code()
    assert code == KafkaError._UNKNOWN_PARTITION
    reports.clear()
    producer.produce(topic, value=b"here", partition=1, on_delivery=lambda e, m: reports.append((e, m.offset())))
    assert producer.flush(30) == 0
    assert reports == [(None, 0)]
    assert kc.watermarks(broker.bootstrap, topic, 0) == (0, 0)
