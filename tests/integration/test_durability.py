"""Data survives a clean restart (SIGTERM) and a crash (SIGKILL under acks=all load)."""

from __future__ import annotations

import threading
import time

import kafka
from confluent_kafka import Producer, TopicPartition

import kclients as kc
from harness import unique, wait_until
from kclients import Rec


def test_restart_keeps_topics_records_and_offsets(broker):
    a = kc.admin(broker.bootstrap)
    t1 = kc.create_topic(broker.bootstrap, unique("keep1"), partitions=1)
    t3 = kc.create_topic(broker.bootstrap, unique("keep3"), partitions=3)
    base = int(time.time() * 1000) - 3_600_000
    recs1 = kc.rich_records(1, 12, "one", base)
    recs3 = kc.rich_records(3, 10, "three", base + 100_000)
    kc.assert_delivered_in_order(recs1, kc.produce_confluent(broker.bootstrap, t1, recs1))
    kc.assert_delivered_in_order(recs3, kc.produce_confluent(broker.bootstrap, t3, recs3))

    topics_before = kc.topics(broker.bootstrap, a)
    marks_before = {(t, p): kc.watermarks(broker.bootstrap, t, p) for t, n in ((t1, 1), (t3, 3)) for p in range(n)}
    assert marks_before[(t1, 0)] == (0, 12)
    assert all(marks_before[(t3, p)] == (0, 10) for p in range(3))

    rc, elapsed, killed = broker.stop()
    assert not killed, f"broker ignored SIGTERM for {elapsed:.1f}s"
    assert rc == 0, f"broker exited with code {rc} on SIGTERM"
    broker.start()

    topics_after = kc.topics(broker.bootstrap)
    assert topics_after.get(t1) == 1 and topics_after.get(t3) == 3, topics_after
    # Internal topics may appear meanwhile (a consumer with a group id makes
    # the broker create __consumer_offsets, as Kafka does); user topics may not.
    user = lambda ts: {n: c for n, c in ts.items() if not n.startswith("__")}  # noqa: E731
    assert user(topics_after) == user(topics_before)
    for key, marks in marks_before.items():
        assert kc.watermarks(broker.bootstrap, *key) == marks, f"watermarks of {key} changed across restart"

    kc.assert_same_records(recs1, kc.consume_confluent(broker.bootstrap, t1, [0], len(recs1), settle=0.3))
    kc.assert_same_records(recs3, kc.consume_kafka_python(broker.bootstrap, t3, [0, 1, 2], len(recs3),
                                                          settle=0.3))

    # ListOffsets by timestamp still works on the reloaded log (records of t1 are 7 ms apart)
    consumer = kc.confluent_consumer(broker.bootstrap)
    try:
        def lookup(ts):
            (tp,) = consumer.offsets_for_times([TopicPartition(t1, 0, ts)], timeout=15)
            assert tp.error is None, tp.error
            return tp.offset
        assert lookup(base - 10_000) == 0
        assert lookup(base + 3 * 7) == 3
        assert lookup(base + 3 * 7 + 1) == 4
        assert lookup(base + 11 * 7) == 11
        assert lookup(base + 11 * 7 + 1) == -1
    finally:
        consumer.close()
    kp = kafka.KafkaConsumer(bootstrap_servers=broker.bootstrap, group_id=None)
    try:
        ktp = kafka.TopicPartition(t1, 0)
        found = kp.offsets_for_times({ktp: base + 5 * 7 - 3})[ktp]
        assert (found.offset, found.timestamp) == (5, base + 5 * 7)
    finally:
        kp.close()

    # new records continue at the next offset
    more = [Rec(value=f"after-{i}".encode(), partition=i % 3) for i in range(6)]
    delivered = kc.produce_confluent(broker.bootstrap, t3, more)
    assert sorted((d.partition, d.offset) for d in delivered) == [(0, 10), (0, 11), (1, 10), (1, 11), (2, 10),
                                                                  (2, 11)]
    delivered = kc.produce_aiokafka(broker.bootstrap, t1, [Rec(value=b"after", partition=0)])
    assert delivered[0].offset == 12
    got = kc.consume_confluent(broker.bootstrap, t1, [0], 1, offsets={0: 12})
    assert [(c.offset, c.value) for c in got] == [(12, b"after")]


def _produce_until_killed(broker, topic: str, partitions: int, start: int, min_acks: int):
    """Produce flat out with acks=all from a thread; SIGKILL the broker once
    min_acks records are acknowledged. Returns every acknowledged
    (partition, offset, value)."""
    acked: list[tuple[int, int, bytes]] = []
    failures: list[str] = []
    stop = threading.Event()
    lock = threading.Lock()

    def produce_forever():
        # The plain (non-idempotent) producer on purpose, librdkafka's default: this test is about
        # acknowledged records surviving a crash; test_idempotence.py runs the idempotent one.
        producer = Producer({"bootstrap.servers": broker.bootstrap, "acks": "all", "linger.ms": 2,
                             "queue.buffering.max.messages": 5000, "message.timeout.ms": 60000,
                             "enable.idempotence": False})

        def on_delivery(err, msg):
            if err is None:
                with lock:
                    acked.append((msg.partition(), msg.offset(), msg.value()))

        i = start
        try:
            while not stop.is_set():
                try:
                    producer.produce(topic, value=f"value-{i:08d}".encode(), key=str(i).encode(),
                                     partition=i % partitions, on_delivery=on_delivery)
                    i += 1
                except BufferError:
                    producer.poll(0.01)
                    continue
                producer.poll(0)
        except Exception as exc:  # noqa: BLE001 - reported by the test thread
            failures.append(repr(exc))
        finally:
            producer.purge(in_queue=True, in_flight=True, blocking=False)
            producer.poll(0.5)
            producer.flush(1)

    thread = threading.Thread(target=produce_forever, daemon=True)
    thread.start()
    try:
        wait_until(lambda: len(acked) >= min_acks or failures or not thread.is_alive(), 60,
                   f"{min_acks} acknowledged records")
        assert not failures, failures
        broker.kill9()
    finally:
        stop.set()
        thread.join(20)
    assert not thread.is_alive(), "producer thread did not stop"
    # acks that reached librdkafka before the kill may be handed over a moment later: they count
    with lock:
        return list(acked)


def test_kill9_under_acks_all_load_loses_no_acked_record(broker):
    """A producer with acks=all runs flat out; the broker is SIGKILLed after a
    few thousand acknowledgements, restarted, and that three times over on the
    same log. Each time, every record ever acknowledged is at the offset the
    broker acknowledged, with its value; offsets are contiguous from 0; a
    quiet topic is untouched; the broker takes new records."""
    partitions = 2
    topic = kc.create_topic(broker.bootstrap, unique("kill9"), partitions=partitions)
    quiet = kc.create_topic(broker.bootstrap, unique("quiet"))
    kc.produce_confluent(broker.bootstrap, quiet, [Rec(value=f"q{i}".encode(), partition=0) for i in range(5)])
    all_acked: list[tuple[int, int, bytes]] = []
    for round_no in range(3):
        all_acked += _produce_until_killed(broker, topic, partitions, start=round_no * 10_000_000, min_acks=3000)
        broker.start()

        highs = {}
        for p in range(partitions):
            low, high = kc.watermarks(broker.bootstrap, topic, p)
            acked_here = [o for (pp, o, _) in all_acked if pp == p]
            assert low == 0, f"round {round_no}, partition {p}: low watermark {low} after restart"
            assert high >= max(acked_here) + 1, \
                f"round {round_no}, partition {p}: high watermark {high} but offset {max(acked_here)} was acked"
            highs[p] = high
        total = sum(highs.values())
        got = kc.consume_confluent(broker.bootstrap, topic, list(range(partitions)), total, timeout=60, settle=0.3)
        assert len(got) == total, f"round {round_no}: read {len(got)} records, high watermarks add up to {total}"
        for p in range(partitions):
            offsets = sorted(c.offset for c in got if c.partition == p)
            assert offsets == list(range(highs[p])), f"round {round_no}, partition {p}: offsets not contiguous from 0"
        by_pos = {(c.partition, c.offset): c.value for c in got}
        missing = [(p, o, v) for (p, o, v) in all_acked if by_pos.get((p, o)) != v]
        assert not missing, \
            f"round {round_no}: {len(missing)} acknowledged records lost or changed, e.g. {missing[:5]}"
        assert kc.watermarks(broker.bootstrap, quiet) == (0, 5), "a topic nobody wrote to changed"

    # the restarted broker takes new records at the end of each partition
    delivered = kc.produce_confluent(broker.bootstrap, topic, [Rec(value=b"after-crash", partition=p)
                                                              for p in range(partitions)], config={"acks": "all"})
    assert sorted((d.partition, d.offset) for d in delivered) == sorted(highs.items())
    got = kc.consume_kafka_python(broker.bootstrap, topic, list(range(partitions)), partitions,
                                  offsets=dict(highs))
    assert sorted(c.value for c in got) == [b"after-crash"] * partitions


def test_connected_clients_carry_on_across_a_restart(broker):
    """A consumer and a producer that stay open across a broker restart
    reconnect by themselves and go on where they were."""
    topic = kc.create_topic(broker.bootstrap, unique("reconnect"))
    producer = Producer({"bootstrap.servers": broker.bootstrap, "linger.ms": 0, "acks": "all",
                         "reconnect.backoff.max.ms": 500})
    consumer = kc.confluent_consumer(broker.bootstrap, {"fetch.wait.max.ms": 200, "reconnect.backoff.max.ms": 500})
    try:
        consumer.assign([TopicPartition(topic, 0, 0)])
        reports = []
        producer.produce(topic, value=b"before", partition=0, on_delivery=lambda e, m: reports.append((e, m.offset())))
        assert producer.flush(15) == 0 and reports == [(None, 0)]
        assert [c.value for c in kc.poll_confluent(consumer, 1, timeout=15)] == [b"before"]

        broker.restart()

        reports.clear()
        producer.produce(topic, value=b"after", partition=0, on_delivery=lambda e, m: reports.append((e, m.offset())))
        assert producer.flush(30) == 0, "the producer did not get its record through after the restart"
        assert reports == [(None, 1)], reports
        got = kc.poll_confluent(consumer, 1, timeout=30)
        assert [(c.offset, c.value) for c in got] == [(1, b"after")]
    finally:
        consumer.close()
