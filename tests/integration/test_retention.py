"""Time-based retention deletes whole old segments and moves the low watermark."""

from __future__ import annotations

import time

from confluent_kafka import Producer

import kclients as kc
from harness import unique, wait_until

# Kafka 4 refuses segment.bytes below 1 MiB (KIP-1030), for topics and for the
# broker's log.segment.bytes alike: 1 MiB segments are the smallest portable ones.
SEGMENT_BYTES = 1024 * 1024
RECORD_BYTES = 100 * 1024


def test_retention_ms_deletes_old_segments(make_broker):
    b = make_broker({"log.retention.check.interval.ms": "500"})
    topic = kc.create_topic(b.bootstrap, unique("retention"),
                            config={"segment.bytes": str(SEGMENT_BYTES), "retention.ms": "1000"})
    n = 35          # about 3.5 MB: three full 1 MiB segments and an active one
    value = bytes(i % 256 for i in range(RECORD_BYTES))
    # CreateTime an hour ago: every segment is past retention as soon as it stops being the active one
    old = int(time.time() * 1000) - 3_600_000
    producer = Producer({"bootstrap.servers": b.bootstrap, "linger.ms": 0, "acks": "all"})
    for i in range(n):          # one record per batch, so segments roll at record boundaries
        reports = []
        producer.produce(topic, value=value, key=str(i).encode(), partition=0, timestamp=old + i,
                         on_delivery=lambda err, msg: reports.append((err, msg.offset())))
        assert producer.flush(15) == 0
        assert reports == [(None, i)], reports

    def low_moved_and_settled():
        # bounded polling: the low watermark has risen and stayed put over three retention checks
        lo, hi = kc.watermarks(b.bootstrap, topic)
        if lo == 0:
            low_moved_and_settled.last = None
            return None
        last = getattr(low_moved_and_settled, "last", None)
        now = time.monotonic()
        if last is None or last[0] != lo:
            low_moved_and_settled.last = (lo, now)
            return None
        return (lo, hi) if now - last[1] >= 1.5 else None
    low, high = wait_until(low_moved_and_settled, 30, "the low watermark to rise above 0 (retention.ms=1000)",
                           interval=0.25)
    assert high == n, "retention changed the high watermark"
    # the active segment is never deleted: the last record is still there
    assert low < n, f"low watermark {low} is past the end ({n})"

    # a consumer starting from the beginning starts at the new low watermark
    got = kc.consume_confluent(b.bootstrap, topic, [0], n - low, timeout=30)
    assert [c.offset for c in got] == list(range(low, n))
    assert got[-1].key == str(n - 1).encode() and got[-1].value == value
    # the partition keeps taking records at the end
    reports = []
    producer.produce(topic, value=b"tail", partition=0, on_delivery=lambda err, msg: reports.append((err, msg.offset())))
    assert producer.flush(15) == 0
    assert reports == [(None, n)]
