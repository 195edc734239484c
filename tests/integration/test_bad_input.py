"""Bad bytes on raw sockets never kill the broker, never disturb other
connections, and are answered the way Kafka answers them: a frame the broker
cannot even delimit (absurd or negative size) closes that connection; a
frame it can delimit but not parse is answered with an error or closes the
connection, promptly (a client must not be left waiting); an unknown
ApiVersions version gets the v0-layout UNSUPPORTED_VERSION answer (KIP-511)."""

from __future__ import annotations

import struct
import time

import pytest
from confluent_kafka import OFFSET_BEGINNING, Producer, TopicPartition

import kclients as kc
import rawwire
from harness import unique

REACTION_TIMEOUT = 10.0


@pytest.fixture
def live_clients(broker):
    """A confluent producer and consumer on their own connections; check() proves
    both still work by sending one record through them."""
    topic = kc.create_topic(broker.bootstrap, unique("bystander"))
    producer = Producer({"bootstrap.servers": broker.bootstrap, "linger.ms": 0})
    consumer = kc.confluent_consumer(broker.bootstrap, {"fetch.wait.max.ms": 100})
    consumer.assign([TopicPartition(topic, 0, OFFSET_BEGINNING)])
    sent = []

    def check(label: str):
        value = f"still-alive-{label}".encode()
        reports = []
        producer.produce(topic, value=value, partition=0, on_delivery=lambda e, m: reports.append((e, m.offset())))
        deadline = time.monotonic() + 15
        while producer.flush(0.2) != 0:
            if not broker.alive():
                raise AssertionError(f"the broker process died after {label} (exit code {broker.proc.returncode}); "
                                     f"its log is printed below")
            assert time.monotonic() < deadline, f"after {label}: the producer could not deliver within 15 s"
        assert reports and reports[0][0] is None, f"after {label}: delivery failed: {reports}"
        assert reports[0][1] == len(sent), f"after {label}: unexpected offset {reports[0][1]}"
        sent.append(value)
        got = kc.poll_confluent(consumer, 1, timeout=15)
        assert [c.value for c in got] == [value], f"after {label}: the consumer did not get the record"
        assert broker.alive(), f"the broker died after {label}"

    check("start")
    yield check
    consumer.close()
    producer.purge()


def _connect(broker) -> rawwire.Connection:
    return rawwire.Connection(broker.host, broker.port, timeout=REACTION_TIMEOUT)


@pytest.mark.parametrize("size", [0x7FFFFFFF, 200 * 1024 * 1024, -1, -0x7FFFFFFF],
                         ids=["2GiB", "200MB", "minus1", "most-negative"])
def test_undelimitable_frame_size_closes_the_connection(broker, live_clients, size):
    with _connect(broker) as conn:
        conn.send(struct.pack(">i", size) + b"\x00\x12\x00\x00\x00\x00\x00\x01")
        assert conn.wait_closed(REACTION_TIMEOUT), f"size prefix {size} did not close the connection"
    live_clients(f"size {size}")
    rss = broker.rss_bytes()
    assert rss is None or rss < 1024 ** 3, f"broker RSS is {rss} bytes after an absurd size prefix"


def test_http_request_closes_the_connection(broker, live_clients):
    """'GET ' read as a size is over 1 GB: not a Kafka frame."""
    with _connect(broker) as conn:
        conn.send(b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n")
        assert conn.wait_closed(REACTION_TIMEOUT), "an HTTP request did not close the connection"
    live_clients("http")


def test_small_frame_of_garbage_gets_a_prompt_reaction(broker, live_clients):
    with _connect(broker) as conn:
        conn.send(rawwire.frame(b"\xff\xfe\xfd\xfc\x00\x01garbage\x99" * 3))
        reaction = conn.reaction(REACTION_TIMEOUT)
        assert reaction in ("closed", "data"), "a frame of garbage left the connection open and unanswered"
    live_clients("garbage")


def test_too_short_frame_closes_the_connection(broker, live_clients):
    """A frame shorter than a request header (3 bytes)."""
    with _connect(broker) as conn:
        conn.send(rawwire.frame(b"\x00\x12\x00"))
        assert conn.wait_closed(REACTION_TIMEOUT), "a 3-byte frame left the connection open"
    live_clients("short")


def test_truncated_frame_then_close(broker, live_clients):
    for announced, sent in ((100, 10), (4096, 4000), (20, 0)):
        conn = _connect(broker)
        payload = rawwire.request_header(rawwire.API_METADATA, 1, 7) + b"\x00" * 5000
        conn.send(struct.pack(">i", announced) + payload[:sent])
        conn.close()
    # half a size prefix, then close
    conn = _connect(broker)
    conn.send(b"\x00\x00")
    conn.close()
    live_clients("truncated frames")


def test_unknown_api_key(broker, live_clients):
    """An api key nobody defines: Kafka closes the connection; an error response
    carrying the correlation id is acceptable too. Silence is not."""
    with _connect(broker) as conn:
        conn.send(rawwire.frame(rawwire.request_header(9999, 0, 42) + b"\x00" * 8))
        reaction = conn.reaction(REACTION_TIMEOUT)
        assert reaction in ("closed", "data"), "unknown api key: no answer and the connection left open"
    live_clients("unknown api key")


def test_valid_header_garbage_body(broker, live_clients):
    """Request bodies that end early or are random bytes: rejected (error
    response or close), promptly."""
    bodies = [
        (rawwire.API_METADATA, 1, b"\x00\x00\x00\x05\x00\x03abc"),      # 5 topics announced, 1 sent
        (rawwire.API_PRODUCE, 3, bytes(range(7, 250, 3))),
        (rawwire.API_FETCH, 4, b"\xff" * 3),
        (rawwire.API_LIST_OFFSETS, 1, b""),
    ]
    for api_key, version, body in bodies:
        with _connect(broker) as conn:
            conn.send(rawwire.frame(rawwire.request_header(api_key, version, 77) + body))
            reaction = conn.reaction(REACTION_TIMEOUT)
            assert reaction in ("closed", "data"), \
                f"api {api_key} v{version} with a garbage body: no answer and the connection left open"
        live_clients(f"garbage body api {api_key}")


HUGE = 0x7FFFFFFF
HUGE_COUNT_BODIES = {
    # api name: (api key, version, flexible header, body announcing ~2^31 items/bytes but carrying a few)
    "metadata-v1-topics": (rawwire.API_METADATA, 1, False, struct.pack(">i", HUGE) + b"\x00\x03abc"),
    "metadata-v12-topics": (rawwire.API_METADATA, 12, True, rawwire.uvarint(HUGE) + b"\x00" * 8),
    "produce-v3-topics": (rawwire.API_PRODUCE, 3, False,
                          struct.pack(">hhi", -1, 1, 1000) + struct.pack(">i", HUGE) + b"\x00\x01t"),
    "produce-v3-records": (rawwire.API_PRODUCE, 3, False,
                           struct.pack(">hhi", -1, 1, 1000) + struct.pack(">i", 1) + rawwire.string("t")
                           + struct.pack(">ii", 1, 0) + struct.pack(">i", HUGE) + b"\x00" * 16),
    "fetch-v4-topics": (rawwire.API_FETCH, 4, False, struct.pack(">iiiib", -1, 100, 1, 1000, 0)
                        + struct.pack(">i", HUGE) + b"\x00\x01t"),
    "list-offsets-v1-topics": (rawwire.API_LIST_OFFSETS, 1, False, struct.pack(">i", -1) + struct.pack(">i", HUGE)),
    "create-topics-v2-topics": (19, 2, False, struct.pack(">i", HUGE) + b"\x00\x01t"),
}


@pytest.mark.parametrize("case", sorted(HUGE_COUNT_BODIES))
def test_huge_count_in_body_is_rejected_without_crash(broker, live_clients, case):
    """A well-formed header and a body whose array count (or bytes length)
    announces ~2^31 entries while the frame holds a few bytes. A decoder that
    trusts the count and preallocates dies of an allocation failure; Kafka
    rejects the request."""
    api_key, version, flexible, body = HUGE_COUNT_BODIES[case]
    with _connect(broker) as conn:
        conn.send(rawwire.frame(rawwire.request_header(api_key, version, 5, flexible=flexible) + body))
        reaction = conn.reaction(REACTION_TIMEOUT)
    live_clients(case)
    assert reaction in ("closed", "data"), f"{case}: no answer and the connection left open"


def test_api_versions_unknown_version_gets_v0_error_answer(broker, live_clients):
    with _connect(broker) as conn:
        error, ranges = conn.api_versions_probe(127)
        assert error == rawwire.ERR_UNSUPPORTED_VERSION, f"ApiVersions v127 answered with error {error}"
        assert rawwire.API_API_VERSIONS in ranges, "the error answer does not carry the ApiVersions range"
        lo, hi = ranges[rawwire.API_API_VERSIONS]
        assert lo == 0 and 3 <= hi < 127, f"ApiVersions range {lo}..{hi}"
        # the same connection serves the retry at a supported version
        error, ranges = conn.api_versions()
        assert error == rawwire.ERR_NONE
        for api_key in (rawwire.API_PRODUCE, rawwire.API_FETCH, rawwire.API_LIST_OFFSETS, rawwire.API_METADATA):
            assert api_key in ranges
    live_clients("ApiVersions v127")


def test_everything_in_a_row_then_api_versions(broker, live_clients):
    """All of the above on one broker, interleaved with real clients; at the end
    the same process still answers ApiVersions on a fresh connection."""
    pid = broker.pid
    sends = [
        struct.pack(">i", 0x7FFFFFFF),
        struct.pack(">i", -5) + b"abc",
        b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + bytes(64),      # a TLS ClientHello
        rawwire.frame(rawwire.request_header(12345, 3, 1) + b"zz"),
        rawwire.frame(rawwire.request_header(rawwire.API_METADATA, 1, 2) + b"\xff\xff\xff"),
        struct.pack(">i", 1000) + b"short",
    ]
    open_conns = []
    for i, data in enumerate(sends):
        conn = _connect(broker)
        conn.send(data)
        open_conns.append(conn)
        live_clients(f"bad input {i}")
    for conn in open_conns:
        conn.close()
    live_clients("all bad inputs")
    assert rawwire.answers_api_versions(broker.host, broker.port)
    assert broker.pid == pid and broker.alive()
