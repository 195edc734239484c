"""Produce and consume with real clients: keys, headers, timestamps, null and
empty values, every compression codec, every acks level."""

from __future__ import annotations

import time

import pytest

import kclients as kc
from harness import unique
from kclients import CLIENTS, Rec


def _base_ts() -> int:
    # explicit CreateTime timestamps ten minutes in the past, so they cannot be
    # confused with the time the broker received the record
    return int(time.time() * 1000) - 600_000


@pytest.mark.parametrize("client", CLIENTS)
def test_roundtrip_same_client(shared_broker, client):
    """Each client reads back exactly what it wrote."""
    topic = kc.create_topic(shared_broker.bootstrap, unique("rt"), partitions=2)
    recs = kc.rich_records(2, 8, client, _base_ts())
    delivered = kc.produce(client, shared_broker.bootstrap, topic, recs)
    kc.assert_delivered_in_order(recs, delivered)
    got = kc.consume(client, shared_broker.bootstrap, topic, [0, 1], len(recs), settle=0.3)
    kc.assert_same_records(recs, got)


@pytest.mark.parametrize("producer,consumer", [("aiokafka", "confluent"), ("confluent", "kafka-python"),
                                               ("kafka-python", "aiokafka")])
def test_roundtrip_cross_client(shared_broker, producer, consumer):
    """What one client implementation writes, another reads back identically."""
    topic = kc.create_topic(shared_broker.bootstrap, unique("xrt"), partitions=2)
    recs = kc.rich_records(2, 8, f"{producer}-to-{consumer}", _base_ts())
    delivered = kc.produce(producer, shared_broker.bootstrap, topic, recs)
    kc.assert_delivered_in_order(recs, delivered)
    got = kc.consume(consumer, shared_broker.bootstrap, topic, [0, 1], len(recs), settle=0.3)
    kc.assert_same_records(recs, got)


@pytest.mark.parametrize("codec", ["none", "gzip", "snappy", "lz4", "zstd"])
def test_compression_codec(shared_broker, codec):
    """librdkafka writes compressed batches; kafka-python and librdkafka read them back."""
    topic = kc.create_topic(shared_broker.bootstrap, unique(f"codec-{codec}"))
    recs = [Rec(value=f"{codec}-{i:04d}-".encode() + b"abcdefgh" * 40, key=f"k{i}".encode(),
                headers=(("h", str(i).encode()),), timestamp=_base_ts() + i, partition=0)
            for i in range(300)]
    # a long linger puts many records in each compressed batch
    delivered = kc.produce_confluent(shared_broker.bootstrap, topic, recs,
                                     config={"compression.type": codec, "linger.ms": 100})
    assert [d.offset for d in delivered] == list(range(300))
    assert kc.watermarks(shared_broker.bootstrap, topic) == (0, 300)
    for reader in ("kafka-python", "confluent"):
        got = kc.consume(reader, shared_broker.bootstrap, topic, [0], 300, settle=0.2)
        assert len(got) == 300, f"{reader} read {len(got)} of 300"
        assert [c.offset for c in got] == list(range(300)), reader
        assert [(c.key, c.value, c.headers, c.timestamp) for c in got] == \
               [(r.key, r.value, r.headers, r.timestamp) for r in recs], reader


@pytest.mark.parametrize("codec", ["gzip", "snappy", "lz4", "zstd"])
def test_compression_pure_python_producers(shared_broker, codec):
    """kafka-python and aiokafka compress with the Python codec libraries; librdkafka reads it."""
    topic = kc.create_topic(shared_broker.bootstrap, unique(f"pycodec-{codec}"))
    recs = [Rec(value=f"{codec}-{i:04d}-".encode() + b"0123456789" * 30, key=f"k{i}".encode(), partition=0)
            for i in range(200)]
    delivered = kc.produce_kafka_python(shared_broker.bootstrap, topic, recs[:100],
                                        config={"compression_type": codec, "linger_ms": 50})
    assert [d.offset for d in delivered] == list(range(100))
    delivered = kc.produce_aiokafka(shared_broker.bootstrap, topic, recs[100:],
                                    config={"compression_type": codec, "linger_ms": 50})
    assert [d.offset for d in delivered] == list(range(100, 200))
    got = kc.consume_confluent(shared_broker.bootstrap, topic, [0], 200, settle=0.2)
    assert [(c.offset, c.key, c.value) for c in got] == [(i, r.key, r.value) for i, r in enumerate(recs)]


@pytest.mark.parametrize("acks", ["0", "1", "all"])
def test_acks_levels(shared_broker, acks):
    topic = kc.create_topic(shared_broker.bootstrap, unique(f"acks{acks}"))
    recs = [Rec(value=f"acks-{acks}-{i}".encode(), partition=0) for i in range(50)]
    delivered = kc.produce_confluent(shared_broker.bootstrap, topic, recs, config={"acks": acks})
    if acks != "0":   # acks=0 gets no response, so no offsets
        assert [d.offset for d in delivered] == list(range(50))
    # with acks=0 the records may land a moment after the producer is done
    got = kc.consume_confluent(shared_broker.bootstrap, topic, [0], 50, settle=0.3)
    assert [c.offset for c in got] == list(range(50))
    assert [c.value for c in got] == [r.value for r in recs]
    assert kc.watermarks(shared_broker.bootstrap, topic) == (0, 50)


def test_many_records_many_partitions(shared_broker):
    """5,000 records over 4 partitions through librdkafka, read by aiokafka in order."""
    topic = kc.create_topic(shared_broker.bootstrap, unique("volume"), partitions=4)
    n, parts = 5000, 4
    recs = [Rec(value=f"{i % parts}:{i // parts}".encode(), partition=i % parts) for i in range(n)]
    kc.produce_confluent(shared_broker.bootstrap, topic, recs, config={"linger.ms": 20})
    got = kc.consume_aiokafka(shared_broker.bootstrap, topic, list(range(parts)), n, timeout=40, settle=0.3)
    assert len(got) == n
    for p in range(parts):
        seen = sorted((c for c in got if c.partition == p), key=lambda c: c.offset)
        assert [c.offset for c in seen] == list(range(n // parts)), f"partition {p}"
        assert [c.value for c in seen] == [f"{p}:{j}".encode() for j in range(n // parts)], f"partition {p}"
