"""Idempotent producers: InitProducerId, the per-partition producer state
(sequence checks and duplicate detection), DescribeProducers, and producer
state across clean and hard restarts.

Real clients show the point of it all: a retried batch whose first attempt
was written must not be written again. A FaultProxy (faultproxy.py) between
the client and the broker loses Produce responses after the broker has
written the batch and cuts connections, so the client retries (librdkafka,
kafka-python and aiokafka alike); a SIGKILL
under load makes every in-flight request a retry against a broker that
rebuilt its producer state from snapshots and the log. In both cases every
record must be in the log exactly once, in send order, at the offset its
delivery report gave.

Raw frames (rawwire.py) show the rules no client lets us choose: the same
batch again is answered with its original offset and not written; a
sequence gap is OUT_OF_ORDER_SEQUENCE_NUMBER (45), an epoch older than the
partition's INVALID_PRODUCER_EPOCH (47), and neither writes anything; a new
epoch starts at sequence 0 (Kafka 4.x); after a restart the last 5 batches
of a producer are still recognised (Felice's snapshots keep all 5, see
ARCHITECTURE.md, "Intended differences").
"""

from __future__ import annotations

import threading
import time

import pytest
from confluent_kafka import Producer

import kclients as kc
import rawwire
from faultproxy import FaultProxy
from harness import unique
from kclients import Rec

OUT_OF_ORDER = rawwire.ERR_OUT_OF_ORDER_SEQUENCE_NUMBER
INVALID_EPOCH = rawwire.ERR_INVALID_PRODUCER_EPOCH


# --------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------

@pytest.fixture
def proxy():
    """A FaultProxy, faults off until the test switches them on; closed at the end."""
    p = FaultProxy(lifetime=180)
    p.faults = False
    yield p
    p.close()


def _broker_behind(make_broker, proxy: FaultProxy, overrides: dict | None = None):
    """A broker that advertises the proxy's address, so clients that
    bootstrap anywhere end up talking to it through the proxy."""
    b = make_broker({"advertised.listeners": proxy.advertised_listener(), **(overrides or {})})
    proxy.start(b.port)
    return b


def _value(partition: int, seq: int) -> bytes:
    return f"p{partition}-{seq:07d}".encode()


def _seq_of(value: bytes) -> int:
    return int(value.split(b"-")[1])


def _idempotent_config(bootstrap: str, **extra) -> dict:
    conf = {"bootstrap.servers": bootstrap, "enable.idempotence": True, "acks": "all",
            "max.in.flight.requests.per.connection": 5, "linger.ms": 2, "message.timeout.ms": 90000,
            "retry.backoff.ms": 20, "retry.backoff.max.ms": 300,
            "reconnect.backoff.ms": 20, "reconnect.backoff.max.ms": 300}
    conf.update(extra)
    return conf


def _check_partition_log(got: list[kc.Consumed], partition: int, sent: int,
                         acked: dict[bytes, tuple[int, int]], all_acked: bool):
    """The records read back from one partition: offsets contiguous from 0,
    values unique and in send order, every acknowledged value at the offset
    its delivery report gave, and (when every record was acknowledged) all
    `sent` of them."""
    mine = sorted((c for c in got if c.partition == partition), key=lambda c: c.offset)
    offsets = [c.offset for c in mine]
    assert offsets == list(range(len(mine))), \
        f"partition {partition}: offsets not contiguous from 0 (first bad at {_first_bad(offsets)})"
    values = [c.value for c in mine]
    dups = len(values) - len(set(values))
    assert dups == 0, f"partition {partition}: {dups} duplicated records, e.g. " \
                      f"{[v for v in values if values.count(v) > 1][:5]}"
    assert all(v.startswith(f"p{partition}-".encode()) for v in values), f"partition {partition}: foreign value"
    seqs = [_seq_of(v) for v in values]
    out_of_order = [(offsets[i], seqs[i - 1], seqs[i]) for i in range(1, len(seqs)) if seqs[i] <= seqs[i - 1]]
    assert not out_of_order, f"partition {partition}: records out of send order (offset, prev, seq): " \
                             f"{out_of_order[:5]}"
    assert all(s < sent for s in seqs), f"partition {partition}: a value that was never sent"
    at = {c.value: c.offset for c in mine}
    wrong = [(v, o, at.get(v)) for v, (p, o) in acked.items() if p == partition and at.get(v) != o]
    assert not wrong, f"partition {partition}: {len(wrong)} acknowledged records missing or elsewhere " \
                      f"(value, acked offset, found at): {wrong[:5]}"
    if all_acked:
        assert seqs == list(range(sent)), \
            f"partition {partition}: {len(seqs)} records of {sent} sent, all acknowledged"


def _assert_one_producer(described: dict, topic: str, records: list[int]) -> None:
    """DescribeProducers shows one producer, at epoch 0, on every partition,
    its last sequence that of the partition's last record (records[p] - 1)."""
    pids = set()
    for p, n in enumerate(records):
        d = described[(topic, p)]
        assert d["error"] == 0 and len(d["producers"]) == 1, f"partition {p}: {d}"
        (prod,) = d["producers"]
        assert (prod["producer_epoch"], prod["last_sequence"]) == (0, n - 1), f"partition {p}: {prod}"
        pids.add(prod["producer_id"])
    assert len(pids) == 1, f"one producer wrote all partitions, DescribeProducers says {pids}"


def _first_bad(offsets: list[int]):
    return next((i for i, o in enumerate(offsets) if o != i), None)


def _describe_one(conn: rawwire.Connection, topic: str, partition: int) -> dict:
    return conn.describe_producers({topic: [partition]})[(topic, partition)]


# --------------------------------------------------------------------------
# real clients: lost responses, crashes
# --------------------------------------------------------------------------

@pytest.mark.slow
def test_lost_produce_responses_are_retried_without_duplicates(make_broker, proxy):
    """confluent-kafka, idempotent, acks=all, 5 in flight, sends 20,000
    records over 3 partitions through a proxy that drops every 5th Produce
    response (after the broker wrote the batch) and cuts the connection,
    and also cuts the connection instead of forwarding every 89th request.
    Every delivery report is a success at the offset the record really has;
    each partition holds its records exactly once, in send order, offsets
    contiguous from 0; the proxy really lost responses (so retries of
    written batches happened) and the broker remembers one producer per
    partition whose last sequence is its last record's."""
    partitions, total = 3, 20_000
    b = _broker_behind(make_broker, proxy)
    topic = kc.create_topic(b.bootstrap, unique("lost-resp"), partitions=partitions)

    proxy.drop_produce_every = 5
    proxy.cut_every = 89
    proxy.faults = True
    reports: dict[bytes, tuple[int, int]] = {}
    errors: list[str] = []

    def on_delivery(err, msg):
        if err is not None:
            errors.append(f"{msg.value()!r}: {err}")
        else:
            reports[msg.value()] = (msg.partition(), msg.offset())

    producer = Producer(_idempotent_config(proxy.bootstrap, **{"batch.num.messages": 150}))
    for i in range(total):
        p, seq = i % partitions, i // partitions
        while True:
            try:
                producer.produce(topic, value=_value(p, seq), partition=p, on_delivery=on_delivery)
                break
            except BufferError:
                producer.poll(0.05)
        producer.poll(0)
    remaining = producer.flush(90)
    stats = proxy.stats()
    assert remaining == 0, f"{remaining} records undelivered after 90 s; proxy: {stats}"
    assert not errors, f"{len(errors)} delivery failures, e.g. {errors[:5]}"
    assert len(reports) == total
    assert stats["dropped_responses"] > 0, f"the proxy dropped no Produce response: {stats}"
    assert stats["cuts"] > 0, f"the proxy cut no connection: {stats}"
    # more Produce requests than answers that got through: retries happened
    assert stats["produce_requests"] > stats["produce_responses"], stats

    proxy.faults = False
    per_partition = {p: len(range(p, total, partitions)) for p in range(partitions)}
    for p in range(partitions):
        offsets = [reports[_value(p, s)] for s in range(per_partition[p])]
        assert offsets == [(p, s) for s in range(per_partition[p])], \
            f"partition {p}: delivery reports not at offsets 0.. in send order " \
            f"(first bad at {_first_bad([o for _, o in offsets])})"
        assert kc.watermarks(b.bootstrap, topic, p) == (0, per_partition[p]), f"partition {p} watermarks"
    got = kc.consume_confluent(b.bootstrap, topic, list(range(partitions)), total, timeout=60, settle=0.5)
    assert len(got) == total, f"read {len(got)} records, sent {total}"
    for p in range(partitions):
        _check_partition_log(got, p, per_partition[p], reports, all_acked=True)

    # the broker itself, not through the proxy (clients read through it, faults off: Metadata names it)
    with rawwire.Connection(b.host, b.port) as conn:
        for p in range(partitions):
            assert conn.latest_offset(topic, p) == (0, per_partition[p]), f"partition {p}: log end offset"
        described = conn.describe_producers({topic: list(range(partitions))})
    _assert_one_producer(described, topic, [per_partition[p] for p in range(partitions)])


class _Load:
    """An idempotent acks=all confluent-kafka producer in a thread sending
    `total` records round-robin over the partitions, at most
    `max_outstanding` unacknowledged at a time (so records are in flight
    whenever the broker dies), then flushing. `reached` is set (from the
    delivery callback, so without polling delay) once `threshold` records
    are acknowledged."""

    def __init__(self, bootstrap: str, topic: str, partitions: int, total: int, threshold: int,
                 max_outstanding: int = 2000):
        self.bootstrap, self.topic, self.partitions, self.total = bootstrap, topic, partitions, total
        self.max_outstanding = max_outstanding
        self.threshold = threshold
        self.reached = threading.Event()
        self.acked: dict[bytes, tuple[int, int]] = {}
        self.failed: list[str] = []
        self.crashed: list[str] = []
        self.produced = 0
        self.unflushed = None
        self.lock = threading.Lock()
        self.abort = threading.Event()
        self.thread = threading.Thread(target=self._run, name="idempotent-load", daemon=True)

    def start(self) -> "_Load":
        self.thread.start()
        return self

    def next_threshold(self, threshold: int):
        with self.lock:
            self.threshold = threshold
            if len(self.acked) >= threshold:
                self.reached.set()
            else:
                self.reached.clear()

    def acks(self) -> int:
        with self.lock:
            return len(self.acked)

    def outstanding(self) -> int:
        with self.lock:
            return self.produced - len(self.acked) - len(self.failed)

    def done(self) -> bool:
        return not self.thread.is_alive()

    def _on_delivery(self, err, msg):
        with self.lock:
            if err is None:
                self.acked[msg.value()] = (msg.partition(), msg.offset())
                if len(self.acked) >= self.threshold:
                    self.reached.set()
            else:
                self.failed.append(f"{msg.value()!r}: {err}")

    def _run(self):
        producer = Producer(_idempotent_config(self.bootstrap))
        try:
            for i in range(self.total):
                p, seq = i % self.partitions, i // self.partitions
                while self.outstanding() >= self.max_outstanding and not self.abort.is_set():
                    producer.poll(0.02)
                if self.abort.is_set():
                    return
                while True:
                    try:
                        producer.produce(self.topic, value=_value(p, seq), partition=p,
                                         on_delivery=self._on_delivery)
                        break
                    except BufferError:
                        if self.abort.is_set():
                            return
                        producer.poll(0.05)
                with self.lock:
                    self.produced += 1
                producer.poll(0)
            deadline = time.monotonic() + 90
            while not self.abort.is_set() and time.monotonic() < deadline:
                self.unflushed = producer.flush(0.5)
                if self.unflushed == 0:
                    return
        except Exception as exc:  # noqa: BLE001 - reported by the test thread
            self.crashed.append(repr(exc))
        finally:
            if self.unflushed != 0:
                producer.purge(in_queue=True, in_flight=True, blocking=False)
                producer.poll(0.2)

    def join(self, timeout: float):
        self.thread.join(timeout)
        if self.thread.is_alive():
            self.abort.set()
            self.thread.join(10)
            raise AssertionError(f"the producer did not finish within {timeout}s "
                                 f"({self.acks()} of {self.total} acknowledged)")


@pytest.mark.slow
@pytest.mark.parametrize("hard", [True, False], ids=["kill9", "sigterm"])
def test_idempotent_producer_across_broker_restart(broker, hard):
    """An idempotent acks=all producer sends 60,000 records over 3
    partitions, up to 2,000 unacknowledged at a time; each time another
    eighth are acknowledged (three times) the broker is SIGKILLed (or
    stopped with SIGTERM) and started again on the same port and data. The
    producer retries what was in flight against the restarted broker (whose
    producer state comes back from snapshots and the log) and finishes.
    Then per partition: offsets contiguous from 0, no value twice, values in
    send order, every acknowledged record at its acknowledged offset; a
    record whose delivery failed may be missing, but none failed here (the
    broker was back long before message.timeout.ms)."""
    partitions, total, rounds = 3, 60_000, 3
    topic = kc.create_topic(broker.bootstrap, unique("restart-idem"), partitions=partitions)
    load = _Load(broker.bootstrap, topic, partitions, total, threshold=total // 8).start()
    try:
        for round_no in range(rounds):
            threshold = load.threshold
            assert load.reached.wait(60) or load.done(), \
                f"round {round_no}: {threshold} records not acknowledged within 60 s"
            assert not load.crashed, load.crashed
            assert not load.done(), f"round {round_no}: the producer finished before the broker was stopped"
            in_flight = load.outstanding()
            assert in_flight > 0, f"round {round_no}: nothing was in flight when the broker went down"
            if hard:
                broker.kill9()
            else:
                rc, elapsed, killed = broker.stop()
                assert not killed and rc == 0, \
                    f"round {round_no}: SIGTERM under load: exit code {rc}, killed={killed} after {elapsed:.1f}s"
            load.next_threshold(threshold + total // 8)
            broker.start()
        load.join(100)
    finally:
        load.abort.set()
    assert not load.crashed, load.crashed

    per_partition = {p: len(range(p, total, partitions)) for p in range(partitions)}
    highs = {p: kc.watermarks(broker.bootstrap, topic, p)[1] for p in range(partitions)}
    got = kc.consume_confluent(broker.bootstrap, topic, list(range(partitions)), sum(highs.values()),
                               timeout=60, settle=0.5)
    assert len(got) == sum(highs.values()), f"read {len(got)} records, high watermarks {highs}"
    all_acked = not load.failed and load.unflushed == 0
    for p in range(partitions):
        _check_partition_log(got, p, per_partition[p], load.acked, all_acked)
    assert not load.failed, f"{len(load.failed)} deliveries failed (none duplicated), e.g. {load.failed[:5]}"
    assert load.unflushed == 0 and len(load.acked) == total


# --------------------------------------------------------------------------
# raw wire: the sequence rules
# --------------------------------------------------------------------------

def test_sequence_rules_on_the_wire(broker):
    """One partition, raw frames. InitProducerId v0 gives an id at epoch 0.
    A batch, then the very same batch again: the same base offset, error 0,
    the log end offset unchanged. A later batch still in the last 5 is
    recognised too. A sequence gap is OUT_OF_ORDER_SEQUENCE_NUMBER and
    writes nothing; so is a sequence that goes back. InitProducerId v3
    (flexible) with the current id and epoch bumps the epoch (Felice keeps
    the id, an intended difference from Kafka); once the partition has seen
    the new epoch, the old one is INVALID_PRODUCER_EPOCH and writes nothing;
    a newer epoch must start at sequence 0. What is read back is every
    accepted batch once, in order."""
    topic = kc.create_topic(broker.bootstrap, unique("seq-rules"))
    ts = int(time.time() * 1000)
    with rawwire.Connection(broker.host, broker.port) as conn:
        def produce(batch):
            return conn.produce(topic, 0, batch)[:2]

        def leo():
            error, offset = conn.latest_offset(topic, 0)
            assert error == 0
            return offset

        error, pid, epoch = conn.init_producer_id(0)
        assert error == 0 and pid >= 0 and epoch == 0, (error, pid, epoch)

        a = rawwire.record_batch([b"a0", b"a1", b"a2"], pid, 0, 0, ts)
        b = rawwire.record_batch([b"b3", b"b4"], pid, 0, 3, ts + 1)
        assert produce(a) == (0, 0)
        assert leo() == 3
        assert produce(a) == (0, 0), "a retried batch must get its original offset"
        assert leo() == 3, "a retried batch was written again"
        assert produce(b) == (0, 3)
        assert produce(a) == (0, 0) and produce(b) == (0, 3)
        assert leo() == 5

        gap = rawwire.record_batch([b"gap"], pid, 0, 9, ts + 2)
        error, offset, message = conn.produce(topic, 0, gap)
        assert (error, offset) == (OUT_OF_ORDER, -1), (error, offset, message)
        back = rawwire.record_batch([b"back"], pid, 0, 4, ts + 2)     # overlaps b, is not b
        assert produce(back)[0] == OUT_OF_ORDER
        assert leo() == 5, "a refused batch was written"

        error, pid2, epoch1 = conn.init_producer_id(3, pid, 0)
        assert (error, pid2, epoch1) == (0, pid, 1), "InitProducerId v3 with the current id and epoch"
        c = rawwire.record_batch([b"c0"], pid, 1, 0, ts + 3)
        assert produce(c) == (0, 5)
        old = rawwire.record_batch([b"old"], pid, 0, 5, ts + 4)       # in sequence for epoch 0
        assert produce(old)[0] == INVALID_EPOCH
        assert produce(a)[0] == INVALID_EPOCH, "a retry of an older epoch's batch"
        assert leo() == 6

        error, _, epoch2 = conn.init_producer_id(3, pid, 1)
        assert (error, epoch2) == (0, 2)
        assert produce(rawwire.record_batch([b"late"], pid, 2, 1, ts + 5))[0] == OUT_OF_ORDER, \
            "a new epoch must start at sequence 0"
        assert produce(rawwire.record_batch([b"d0", b"d1"], pid, 2, 0, ts + 6)) == (0, 6)
        assert leo() == 8

        # a producer the partition never saw may start anywhere; a plain batch is never checked
        error, other, _ = conn.init_producer_id(0)
        assert error == 0 and other != pid
        assert produce(rawwire.record_batch([b"o"], other, 0, 41, ts + 7)) == (0, 8)
        plain = rawwire.record_batch([b"plain"], timestamp_ms=ts + 8)
        assert produce(plain) == (0, 9) and produce(plain) == (0, 10)

    got = kc.consume_confluent(broker.bootstrap, topic, [0], 11, settle=0.3)
    assert [(c.offset, c.value) for c in got] == list(enumerate(
        [b"a0", b"a1", b"a2", b"b3", b"b4", b"c0", b"d0", b"d1", b"o", b"plain", b"plain"]))


def test_only_the_last_five_batches_are_recognised(broker):
    """Kafka remembers a producer's last 5 batches per partition: a retry of
    any of them gets its original offset; a retry of the 6th-last is out of
    order (45) and writes nothing."""
    topic = kc.create_topic(broker.bootstrap, unique("last5"))
    now = int(time.time() * 1000)
    with rawwire.Connection(broker.host, broker.port) as conn:
        _, pid, _ = conn.init_producer_id(0)
        batches = [rawwire.record_batch([f"r{i}-{j}".encode() for j in range(2)], pid, 0, 2 * i, now + i)
                   for i in range(7)]
        for i, batch in enumerate(batches):
            assert conn.produce(topic, 0, batch)[:2] == (0, 2 * i)
        for i in range(2, 7):
            assert conn.produce(topic, 0, batches[i])[:2] == (0, 2 * i), f"retry of batch {i}"
        for i in (0, 1):
            assert conn.produce(topic, 0, batches[i])[0] == OUT_OF_ORDER, f"retry of batch {i}, too old"
        assert conn.latest_offset(topic, 0) == (0, 14)


# --------------------------------------------------------------------------
# DescribeProducers
# --------------------------------------------------------------------------

def test_describe_producers(broker):
    """DescribeProducers v0 (flexible) lists, per partition, the idempotent
    producers that wrote to it: a raw-wire producer with its id, epoch, last
    sequence and its last batch's timestamp; a confluent-kafka idempotent
    producer on another partition with epoch 0 and the last sequence of its
    100 records; nothing for a partition written by a plain producer.
    Coordinator epoch and transaction start offset are -1 (no transactions).
    An unknown topic, and an unknown partition of a known topic, are
    UNKNOWN_TOPIC_OR_PARTITION."""
    topic = kc.create_topic(broker.bootstrap, unique("describe"), partitions=3)
    ts = int(time.time() * 1000) - 60_000
    with rawwire.Connection(broker.host, broker.port) as conn:
        _, pid, _ = conn.init_producer_id(0)
        assert conn.produce(topic, 0, rawwire.record_batch([b"x"] * 3, pid, 0, 0, ts))[:2] == (0, 0)
        assert conn.produce(topic, 0, rawwire.record_batch([b"y"] * 2, pid, 0, 3, ts + 5))[:2] == (0, 3)
        # no producer yet anywhere but partition 0
        d = conn.describe_producers({topic: [0, 1, 2]})
        assert d[(topic, 0)] == {"error": 0, "message": None, "producers": [
            {"producer_id": pid, "producer_epoch": 0, "last_sequence": 4, "last_timestamp": ts + 5,
             "coordinator_epoch": -1, "current_txn_start_offset": -1}]}
        assert d[(topic, 1)] == {"error": 0, "message": None, "producers": []}

        kc.produce_confluent(broker.bootstrap, topic, [Rec(value=f"v{i}".encode(), partition=1) for i in range(100)],
                             config={"enable.idempotence": True})
        kc.produce_confluent(broker.bootstrap, topic, [Rec(value=b"plain", partition=2)] * 10,
                             config={"enable.idempotence": False})
        d = conn.describe_producers({topic: [1, 2]})
        assert d[(topic, 1)]["error"] == 0
        (prod,) = d[(topic, 1)]["producers"]
        assert prod["producer_id"] >= 0 and prod["producer_id"] != pid
        assert (prod["producer_epoch"], prod["last_sequence"]) == (0, 99), prod
        assert prod["last_timestamp"] > 0
        assert d[(topic, 2)] == {"error": 0, "message": None, "producers": []}, "a plain producer is not listed"

        missing = unique("missing")
        d = conn.describe_producers({missing: [0], topic: [7]})
        assert d[(missing, 0)]["error"] == rawwire.ERR_UNKNOWN_TOPIC_OR_PARTITION and not d[(missing, 0)]["producers"]
        assert d[(topic, 7)]["error"] == rawwire.ERR_UNKNOWN_TOPIC_OR_PARTITION
    assert missing not in kc.topics(broker.bootstrap), "DescribeProducers must not create topics"


# --------------------------------------------------------------------------
# the pure-Python clients
# --------------------------------------------------------------------------

@pytest.mark.parametrize("client", ["kafka-python", "aiokafka"])
def test_python_clients_idempotent_exactly_once_in_order(make_broker, proxy, client):
    """kafka-python and aiokafka with enable_idempotence=True send 3,000
    records over 3 partitions in small batches through the proxy, which
    drops every 3rd Produce response and cuts that connection: the records
    are acknowledged at offsets 0.. in send order and read back exactly
    once; the broker lists the client as an idempotent producer of each
    partition with the last sequence of its records (so the client really
    ran idempotent, with InitProducerId)."""
    partitions, per_partition = 3, 1000
    b = _broker_behind(make_broker, proxy)
    topic = kc.create_topic(b.bootstrap, unique(f"idem-{client}"), partitions=partitions)
    recs = [Rec(value=_value(i % partitions, i // partitions), partition=i % partitions)
            for i in range(partitions * per_partition)]
    batch = {"kafka-python": "batch_size", "aiokafka": "max_batch_size"}[client]
    proxy.drop_produce_every = 3
    proxy.faults = True
    delivered = kc.produce(client, proxy.bootstrap, topic, recs,
                           config={"enable_idempotence": True, "acks": "all", batch: 2000}, timeout=60)
    proxy.faults = False
    stats = proxy.stats()
    assert stats["dropped_responses"] > 0, f"the proxy dropped no Produce response: {stats}"
    kc.assert_delivered_in_order(recs, delivered)
    got = kc.consume_confluent(b.bootstrap, topic, list(range(partitions)), len(recs), settle=0.3)
    assert len(got) == len(recs), f"read {len(got)} records, sent {len(recs)}; proxy: {stats}"
    acked = {r.value: (d.partition, d.offset) for r, d in zip(recs, delivered)}
    for p in range(partitions):
        _check_partition_log(got, p, per_partition, acked, all_acked=True)
    with rawwire.Connection(b.host, b.port) as conn:
        described = conn.describe_producers({topic: list(range(partitions))})
    _assert_one_producer(described, topic, [per_partition] * partitions)


# --------------------------------------------------------------------------
# restarts keep duplicate detection
# --------------------------------------------------------------------------

def test_restarts_keep_duplicate_detection(broker):
    """A producer writes 7 batches; the broker is stopped cleanly and
    started again: each of the last 5 batches, sent again, is answered with
    its original offset and not written; an older one, and a gap, are out of
    order; the next batch in sequence is taken. Then the broker is
    SIGKILLed (no closing snapshot: the last batches come back by replaying
    the log) and started again: the same holds. Producer ids are never
    handed out twice across restarts. Reading back gives every batch once."""
    topic = kc.create_topic(broker.bootstrap, unique("restart-dedup"))
    batches: list[bytes] = []
    batches_values: list[list[bytes]] = []
    offsets: list[int] = []     # base offset of each batch
    # recent timestamps: a producer whose last batch is older than
    # producer.id.expiration.ms (1 day) is forgotten, at the latest on a restart
    now = int(time.time() * 1000)

    def batch(pid, i, n):
        values = [f"b{i}-{j}".encode() for j in range(n)]
        seq = sum(len(v) for v in batches_values)
        batches_values.append(values)
        return rawwire.record_batch(values, pid, 0, seq, now + i)

    with rawwire.Connection(broker.host, broker.port) as conn:
        _, pid, _ = conn.init_producer_id(0)
        for i in range(7):
            batches.append(batch(pid, i, 1 + i % 3))
            error, offset, _ = conn.produce(topic, 0, batches[-1])
            assert error == 0
            offsets.append(offset)
    assert offsets == [sum(len(v) for v in batches_values[:i]) for i in range(7)]
    pids = {pid}

    for how in ("sigterm", "kill9"):
        leo = sum(len(v) for v in batches_values)
        broker.restart(hard=(how == "kill9"))
        with rawwire.Connection(broker.host, broker.port) as conn:
            assert conn.latest_offset(topic, 0) == (0, leo), f"after {how}: log end offset"
            n = len(batches)
            for i in range(n - 5, n):
                assert conn.produce(topic, 0, batches[i])[:2] == (0, offsets[i]), \
                    f"after {how}: retry of batch {i} (one of the last 5)"
            assert conn.produce(topic, 0, batches[n - 6])[0] == OUT_OF_ORDER, f"after {how}: 6th-last batch"
            gap = rawwire.record_batch([b"gap"], pid, 0, leo + 3, now)
            assert conn.produce(topic, 0, gap)[0] == OUT_OF_ORDER, f"after {how}: a gap"
            assert conn.latest_offset(topic, 0) == (0, leo), f"after {how}: something was written"
            # the next batch in sequence
            batches.append(batch(pid, n, 2))
            error, offset, _ = conn.produce(topic, 0, batches[-1])
            assert (error, offset) == (0, leo), f"after {how}: the next batch in sequence"
            offsets.append(offset)
            assert conn.produce(topic, 0, batches[-1])[:2] == (0, leo)
            error, new_pid, _ = conn.init_producer_id(0)
            assert error == 0 and new_pid not in pids, f"after {how}: producer id {new_pid} handed out again"
            pids.add(new_pid)

    expected = [v for values in batches_values for v in values]
    got = kc.consume_confluent(broker.bootstrap, topic, [0], len(expected), settle=0.3)
    assert [(c.offset, c.value) for c in got] == list(enumerate(expected))
