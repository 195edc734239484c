"""Size and connection limits: message.max.bytes, max.connections, connections.max.idle.ms."""

from __future__ import annotations

import time

from confluent_kafka import KafkaError, Producer

import kclients as kc
import rawwire
from harness import unique, wait_until
from kclients import Rec


def test_two_megabyte_record_is_refused_and_broker_keeps_serving(broker):
    topic = kc.create_topic(broker.bootstrap, unique("big"))
    # librdkafka's own message.max.bytes (1,000,000) would refuse the record before the broker saw it
    producer = Producer({"bootstrap.servers": broker.bootstrap, "message.max.bytes": 10_000_000,
                         "retries": 0, "linger.ms": 0})
    reports = []
    producer.produce(topic, value=b"x" * (2 * 1024 * 1024), partition=0,
                     on_delivery=lambda err, msg: reports.append(err))
    assert producer.flush(30) == 0
    assert len(reports) == 1 and reports[0] is not None, "a 2 MiB record was accepted with default message.max.bytes"
    assert reports[0].code() == KafkaError.MSG_SIZE_TOO_LARGE, f"unexpected error {reports[0]}"
    assert kc.watermarks(broker.bootstrap, topic) == (0, 0), "the refused record left something in the log"

    # the same producer, and other clients, go on
    ok = []
    producer.produce(topic, value=b"small", partition=0, on_delivery=lambda err, msg: ok.append((err, msg.offset())))
    assert producer.flush(30) == 0
    assert ok == [(None, 0)]
    kc.produce_kafka_python(broker.bootstrap, topic, [Rec(value=b"small-2", partition=0)])
    got = kc.consume_confluent(broker.bootstrap, topic, [0], 2, settle=0.3)
    assert [(c.offset, c.value) for c in got] == [(0, b"small"), (1, b"small-2")]
    assert broker.alive()


def test_record_just_under_message_max_bytes_is_accepted(broker):
    """1,048,588 is the largest batch the default message.max.bytes accepts; a
    one-record batch of a bit less must go through, and come back intact."""
    topic = kc.create_topic(broker.bootstrap, unique("nearmax"))
    value = bytes(i % 251 for i in range(1_048_588 - 72 - 64))
    delivered = kc.produce_confluent(broker.bootstrap, topic, [Rec(value=value, partition=0)],
                                     config={"message.max.bytes": 10_000_000})
    assert delivered[0].offset == 0
    got = kc.consume_confluent(broker.bootstrap, topic, [0], 1, config={"fetch.message.max.bytes": 2_000_000})
    assert len(got) == 1 and got[0].value == value


def test_max_connections_refuses_the_extra_connection(make_broker):
    limit = 5
    b = make_broker({"max.connections": str(limit)})
    conns: list[rawwire.Connection] = []
    try:
        # Open `limit` connections, each proven served. The start-up probe's
        # connection may take a moment to be released, hence the bounded retry.
        for i in range(limit):
            def one_served():
                c = rawwire.Connection(b.host, b.port, timeout=3)
                try:
                    error, _ = c.api_versions()
                    assert error == 0
                    return c
                except (OSError, ConnectionError, AssertionError):
                    c.close()
                    return None
            conns.append(wait_until(one_served, 10, f"connection {i + 1} of {limit} to be served", interval=0.2))

        # The one over the limit is refused, closed, or at least never served.
        extra_outcome = "served"
        try:
            extra = rawwire.Connection(b.host, b.port, timeout=3)
        except OSError:
            extra_outcome = "refused"
        else:
            try:
                extra.send(rawwire.frame(rawwire.request_header(rawwire.API_API_VERSIONS, 0, 99)))
                extra_outcome = {"data": "served", "closed": "closed", "nothing": "not served"}[extra.reaction(3)]
            except OSError:
                extra_outcome = "closed"
            finally:
                extra.close()
        assert extra_outcome != "served", f"connection {limit + 1} was served with max.connections={limit}"

        # every earlier connection still works
        for i, c in enumerate(conns):
            error, _ = c.api_versions()
            assert error == 0, f"connection {i + 1} stopped working"

        # a freed slot is given to a new connection
        conns.pop().close()
        wait_until(lambda: rawwire.answers_api_versions(b.host, b.port, timeout=2), 15,
                   "a new connection to be served after one was closed")
    finally:
        for c in conns:
            c.close()
    assert b.alive()


def test_idle_connection_is_closed_by_the_broker(make_broker):
    b = make_broker({"connections.max.idle.ms": "1000"})
    with rawwire.Connection(b.host, b.port, timeout=5) as idle, \
            rawwire.Connection(b.host, b.port, timeout=5) as busy:
        assert idle.api_versions()[0] == 0
        opened = time.monotonic()
        # keep the other connection busy meanwhile: activity resets its idle clock
        closed = False
        deadline = opened + 20
        while time.monotonic() < deadline:
            if idle.wait_closed(0.3):
                closed = True
                break
            assert busy.api_versions()[0] == 0, "a busy connection was closed"
        took = time.monotonic() - opened
        assert closed, "an idle connection was still open 20 s after its last request (connections.max.idle.ms=1000)"
        assert took >= 0.9, f"closed after only {took:.2f}s of idleness"
        assert busy.api_versions()[0] == 0, "the busy connection was closed too"
    assert rawwire.answers_api_versions(b.host, b.port)
