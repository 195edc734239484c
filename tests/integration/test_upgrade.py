"""A data folder of the previous release (single-file metadata log, before
the Raft metadata quorum) keeps its topics, records, groups and committed
offsets after the upgrade, and goes on taking writes; a restart after the
migration finds everything again. The folder was made by
fixtures/make_prev_release_data.py with that release's binary."""
import tarfile
from pathlib import Path

from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient

from harness import Broker

FIXTURE = Path(__file__).resolve().parent / "fixtures" / "prev-release-data.tar.gz"


def read_all(bootstrap, topic, partitions):
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": "upgrade-reader",
                  "enable.auto.commit": False, "auto.offset.reset": "earliest"})
    c.assign([TopicPartition(topic, p, 0) for p in range(partitions)])
    got = {}
    try:
        empty = 0
        while empty < 5:
            m = c.poll(1.0)
            if m is None:
                empty += 1
                continue
            assert m.error() is None, m.error()
            got.setdefault(m.partition(), []).append((m.offset(), m.value().decode()))
    finally:
        c.close()
    return got


def committed(bootstrap, group, topic, partitions):
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": group, "enable.auto.commit": False})
    try:
        tps = c.committed([TopicPartition(topic, p) for p in range(partitions)], timeout=30)
        return {tp.partition: (tp.offset, tp.metadata) for tp in tps}
    finally:
        c.close()


def check(bootstrap, extra=()):
    admin = AdminClient({"bootstrap.servers": bootstrap})
    md = admin.list_topics(timeout=30)
    assert "kept" in md.topics and len(md.topics["kept"].partitions) == 3
    got = read_all(bootstrap, "kept", 3)
    for p in range(3):
        want = [(i, f"v-{p}-{i}") for i in range(10)] + [(10 + i, v) for i, v in enumerate(extra) if p == 0]
        assert got.get(p) == want, (p, got.get(p))
    assert committed(bootstrap, "kept-group", "kept", 3) == {0: (4, "m0"), 1: (7, "m1"), 2: (10, "m2")}


def test_a_previous_release_data_folder_keeps_its_data(tmp_path):
    with tarfile.open(FIXTURE) as tar:
        tar.extractall(tmp_path / "b", filter="data")
    b = Broker(tmp_path / "b")
    b.start()
    try:
        check(b.bootstrap)
        meta = b.data_dir / "__cluster_metadata-0"
        assert (meta / "records.log.migrated").exists() and not (meta / "records.log").exists()
        p = Producer({"bootstrap.servers": b.bootstrap, "enable.idempotence": True})
        p.produce("kept", value="after-upgrade", partition=0)
        assert p.flush(30) == 0
        b.stop()
        b.start()
        check(b.bootstrap, extra=["after-upgrade"])
    finally:
        b.stop()
