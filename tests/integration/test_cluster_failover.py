"""Real clients through a leader's kill -9 on a three-node cluster.

`felice dev cluster --nodes 3` runs each node as its own process. A topic
with replication factor 3 and `min.insync.replicas=2` takes records from an
idempotent acks=all producer (confluent-kafka, the librdkafka family; and
kafka-python, a pure-Python client) while the partition's leader is killed
with kill -9. The client moves to the new leader as it would with Kafka
(NOT_LEADER_OR_FOLLOWER or a lost connection, then fresh metadata). Every
record must be acknowledged without error, and reading the partition back
must give each record exactly once, in order.

Waits are bounded conditions; the kill happens once a third of the records
are acknowledged, so the failover falls in the middle of the stream.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import threading
import time
from pathlib import Path

import pytest
from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from harness import felice_bin, unique, wait_until

RECORDS = 3000
START_TIMEOUT = 60.0


def _free_base() -> int:
    """A base port whose three client and three controller (+100) ports are free."""
    for _ in range(50):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            base = s.getsockname()[1]
        if base + 102 > 65535:
            continue
        ok = True
        for port in (base, base + 1, base + 2, base + 100, base + 101, base + 102):
            with socket.socket() as s:
                try:
                    s.bind(("127.0.0.1", port))
                except OSError:
                    ok = False
                    break
        if ok:
            return base
    raise RuntimeError("no free port range for the cluster")


class DevCluster:
    """`felice dev cluster --nodes 3` in `workdir`; nodes killed by the PID
    each writes to `node-N/pid`."""

    def __init__(self, workdir: Path):
        self.dir = workdir / "cluster"
        self.err = open(workdir / "cluster.err", "wb")
        self.proc = subprocess.Popen(
            [str(felice_bin()), "dev", "cluster", "--nodes", "3", "--dir", str(self.dir),
             "--base-port", str(_free_base())],
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=self.err)
        line: list[bytes] = []
        reader = threading.Thread(target=lambda: line.append(self.proc.stdout.readline()), daemon=True)
        reader.start()
        reader.join(START_TIMEOUT)
        self.bootstrap = line[0].decode().strip() if line else ""
        if len(self.bootstrap.split(",")) != 3:
            self.stop()
            raise AssertionError(f"dev cluster did not start: {self.bootstrap!r}\n{self.logs()}")

    def pid(self, node: int) -> int:
        return int((self.dir / f"node-{node}" / "pid").read_text().strip())

    def kill9(self, node: int) -> None:
        os.kill(self.pid(node), signal.SIGKILL)

    def logs(self) -> str:
        out = []
        for n in (1, 2, 3):
            p = self.dir / f"node-{n}" / "server.log"
            if p.exists():
                lines = p.read_text(errors="replace").splitlines()
                out.append(f"--- node {n}:\n" + "\n".join(lines[-30:]))
        return "\n".join(out)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self.err.close()


@pytest.fixture
def cluster(tmp_path, request):
    c = DevCluster(tmp_path)
    yield c
    rep = getattr(request.node, "rep_call", None)
    if rep is not None and rep.failed:
        print(c.logs())
    c.stop()


def _replicated_topic(bootstrap: str) -> str:
    name = unique("failover")
    admin = AdminClient({"bootstrap.servers": bootstrap})
    fs = admin.create_topics([NewTopic(name, num_partitions=1, replication_factor=3,
                                       config={"min.insync.replicas": "2"})])
    fs[name].result(30)

    def full_isr():
        md = admin.list_topics(name, timeout=10)
        p = md.topics[name].partitions.get(0)
        return p is not None and p.leader >= 0 and len(p.isrs) == 3 and p
    wait_until(full_isr, 30, "three replicas in sync")
    return name


def _leader(bootstrap: str, topic: str) -> int:
    md = AdminClient({"bootstrap.servers": bootstrap}).list_topics(topic, timeout=10)
    return md.topics[topic].partitions[0].leader


def _await_new_leader(bootstrap: str, topic: str, old: int) -> int:
    """Each node learns the new leader on its own time: ask until one says."""
    return wait_until(lambda: (lambda l: l if l not in (-1, old) else None)(_leader(bootstrap, topic)),
                      30, f"a leader other than {old}")


def _read_back(bootstrap: str, topic: str, count: int) -> list[bytes]:
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": unique("reader"),
                  "enable.auto.commit": False, "auto.offset.reset": "earliest"})
    try:
        c.assign([TopicPartition(topic, 0, 0)])
        values: list[bytes] = []
        deadline = time.monotonic() + 60
        while len(values) < count and time.monotonic() < deadline:
            m = c.poll(0.5)
            if m is None or m.error():
                continue
            values.append(m.value())
        # Anything past `count` would be a duplicate: give it a moment to show.
        end = time.monotonic() + 1.0
        while time.monotonic() < end:
            m = c.poll(0.2)
            if m is not None and not m.error():
                values.append(m.value())
        return values
    finally:
        c.close()


def _expected() -> list[bytes]:
    return [f"r{i:06d}".encode() for i in range(RECORDS)]


def test_confluent_kafka_idempotent_producer_survives_the_leaders_kill_9(cluster):
    topic = _replicated_topic(cluster.bootstrap)
    leader = _leader(cluster.bootstrap, topic)
    p = Producer({"bootstrap.servers": cluster.bootstrap, "enable.idempotence": True,
                  "acks": "all", "linger.ms": 2, "max.in.flight.requests.per.connection": 5})
    errors: list[str] = []
    acked = [0]

    def on_delivery(err, _msg):
        if err is not None:
            errors.append(str(err))
        else:
            acked[0] += 1

    killed_at = None
    for i, v in enumerate(_expected()):
        p.produce(topic, v, partition=0, on_delivery=on_delivery)
        p.poll(0)
        if i % 100 == 99:
            # At most ~100 records in flight: the failover falls mid-stream.
            wait_until(lambda: (p.poll(0.05), acked[0] + len(errors) >= i - 99)[1], 60,
                       "deliveries to keep up")
        if killed_at is None and acked[0] >= RECORDS // 3:
            cluster.kill9(leader)
            killed_at = time.monotonic()
    remaining = p.flush(90)
    assert killed_at is not None, "the leader was never killed"
    assert remaining == 0, f"{remaining} records never acknowledged"
    assert errors == [], f"delivery errors: {errors[:5]}"
    _await_new_leader(cluster.bootstrap, topic, leader)
    assert _read_back(cluster.bootstrap, topic, RECORDS) == _expected()


def test_kafka_python_idempotent_producer_survives_the_leaders_kill_9(cluster):
    from kafka import KafkaProducer

    topic = _replicated_topic(cluster.bootstrap)
    leader = _leader(cluster.bootstrap, topic)
    p = KafkaProducer(bootstrap_servers=cluster.bootstrap.split(","), acks="all",
                      enable_idempotence=True, linger_ms=2, retries=2**31 - 1,
                      request_timeout_ms=10_000)
    futures = []
    killed = False
    try:
        for i, v in enumerate(_expected()):
            futures.append(p.send(topic, value=v, partition=0))
            if i % 100 == 99:
                futures[-1].get(timeout=60)
            if not killed and i >= RECORDS // 3:
                # Up to 50 sends still in flight when the fault hits.
                futures[-50].get(timeout=60)
                cluster.kill9(leader)
                killed = True
        p.flush(90)
        failed = [f.exception for f in futures if f.failed()]
        assert failed == [], f"delivery errors: {failed[:5]}"
        assert all(f.succeeded() for f in futures)
    finally:
        p.close(10)
    _await_new_leader(cluster.bootstrap, topic, leader)
    assert _read_back(cluster.bootstrap, topic, RECORDS) == _expected()
