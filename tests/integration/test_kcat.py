"""kcat (librdkafka's command-line client, the one found on PATH) against the broker."""

from __future__ import annotations

import shutil
import subprocess

import pytest

import kclients as kc
from harness import unique


@pytest.fixture(scope="module")
def kcat() -> str:
    path = shutil.which("kcat") or shutil.which("kafkacat")
    if path is None:
        pytest.fail("neither kcat nor kafkacat is on PATH (scripts/test installs kcat)")
    return path


def run(cmd: list[str], stdin: str | None = None, timeout: float = 30) -> subprocess.CompletedProcess:
    try:
        res = subprocess.run(cmd, input=stdin, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired as exc:
        raise AssertionError(f"{' '.join(cmd)} still running after {timeout}s; stderr: {exc.stderr}") from None
    assert res.returncode == 0, f"{' '.join(cmd)} exited {res.returncode}\nstdout:\n{res.stdout}\nstderr:\n{res.stderr}"
    return res


def test_kcat_lists_metadata(broker, kcat):
    topic = kc.create_topic(broker.bootstrap, unique("kcat-list"), partitions=3)
    out = run([kcat, "-b", broker.bootstrap, "-L"]).stdout
    assert f'topic "{topic}" with 3 partitions' in out, out
    assert f"{broker.host}:{broker.port}" in out, out
    # one topic only: the metadata request for it alone
    out = run([kcat, "-b", broker.bootstrap, "-L", "-t", topic]).stdout
    assert f'topic "{topic}" with 3 partitions' in out, out
    for p in range(3):
        assert f"partition {p}," in out, out


def test_kcat_produce_then_consume_keys_and_values(broker, kcat):
    topic = kc.create_topic(broker.bootstrap, unique("kcat-rt"))
    lines = [f"k{i}:v{i}" for i in range(1, 6)] + ["key with spaces:value: with a colon"]
    run([kcat, "-b", broker.bootstrap, "-P", "-t", topic, "-K:"], stdin="\n".join(lines) + "\n")
    assert kc.watermarks(broker.bootstrap, topic) == (0, len(lines))
    out = run([kcat, "-b", broker.bootstrap, "-C", "-t", topic, "-o", "beginning", "-e", "-f", "%k=%s\\n"]).stdout
    assert out.splitlines() == [f"k{i}=v{i}" for i in range(1, 6)] + ["key with spaces=value: with a colon"]
    # the same records as a Python client sees them
    got = kc.consume_kafka_python(broker.bootstrap, topic, [0], len(lines))
    assert [(c.key, c.value) for c in got][:2] == [(b"k1", b"v1"), (b"k2", b"v2")]
    # offsets printed by kcat match the log's
    out = run([kcat, "-b", broker.bootstrap, "-C", "-t", topic, "-o", "4", "-e", "-f", "%o %k\\n"]).stdout
    assert out.splitlines() == ["4 k5", "5 key with spaces"]


def test_kcat_idempotent_producer(broker, kcat):
    """kcat with -X enable.idempotence=true: librdkafka takes a producer id
    (InitProducerId) and numbers its batches; every line lands once, and the
    partition remembers the producer (DescribeProducers)."""
    import rawwire

    topic = kc.create_topic(broker.bootstrap, unique("kcat-idem"))
    lines = [f"line-{i}" for i in range(500)]
    run([kcat, "-b", broker.bootstrap, "-P", "-t", topic, "-p", "0", "-X", "enable.idempotence=true",
         "-X", "linger.ms=5"], stdin="\n".join(lines) + "\n")
    assert kc.watermarks(broker.bootstrap, topic) == (0, len(lines))
    out = run([kcat, "-b", broker.bootstrap, "-C", "-t", topic, "-o", "beginning", "-e"]).stdout
    assert out.splitlines() == lines
    with rawwire.Connection(broker.host, broker.port) as conn:
        described = conn.describe_producers({topic: [0]})[(topic, 0)]
    assert described["error"] == 0, described
    assert len(described["producers"]) == 1, described
    producer = described["producers"][0]
    assert producer["producer_id"] >= 0 and producer["producer_epoch"] == 0
    assert producer["last_sequence"] == len(lines) - 1, producer
