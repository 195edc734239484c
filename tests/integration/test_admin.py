"""Topic administration (CreateTopics, DeleteTopics, DescribeCluster through
confluent-kafka's AdminClient) and metadata auto-creation."""

from __future__ import annotations

import kafka
import kafka.errors
import pytest
from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import NewTopic

import kclients as kc
from harness import unique, wait_until
from kclients import Rec


def expect_error(future, timeout: float = 30.0) -> int:
    """Resolve an admin future that must FAIL; return its KafkaError code."""
    try:
        value = future.result(timeout=timeout)
    except KafkaException as exc:
        return exc.args[0].code()
    raise AssertionError(f"expected the operation to fail, but it succeeded with {value!r}")


def test_create_topics_with_configs(broker):
    topic = unique("cfg")
    kc.create_topic(broker.bootstrap, topic, partitions=3,
                    config={"retention.ms": "86400000", "cleanup.policy": "delete", "segment.bytes": "1048576"})
    assert kc.topics(broker.bootstrap)[topic] == 3
    for p in range(3):
        assert kc.watermarks(broker.bootstrap, topic, p) == (0, 0)


def test_topic_max_message_bytes_config_is_honoured(broker):
    """A topic's max.message.bytes overrides the broker's message.max.bytes."""
    topic = kc.create_topic(broker.bootstrap, unique("bigtopic"), config={"max.message.bytes": "3000000"})
    value = b"y" * (2 * 1024 * 1024)
    delivered = kc.produce_confluent(broker.bootstrap, topic, [Rec(value=value, partition=0)],
                                     config={"message.max.bytes": 10_000_000})
    assert delivered[0].offset == 0
    got = kc.consume_confluent(broker.bootstrap, topic, [0], 1)
    assert len(got) == 1 and got[0].value == value


def test_create_topics_validate_only_creates_nothing(broker):
    a = kc.admin(broker.bootstrap)
    topic = unique("validate")
    futures = a.create_topics([NewTopic(topic, num_partitions=2, replication_factor=1,
                                        config={"retention.ms": "3600000"})],
                              validate_only=True, request_timeout=15)
    futures[topic].result(timeout=30)
    assert topic not in kc.topics(broker.bootstrap, a), "validate_only created the topic"
    # an invalid request is refused in validate-only mode too, and creates nothing either
    futures = a.create_topics([NewTopic(topic, num_partitions=1, replication_factor=1,
                                        config={"retention.ms": "not-a-number"})],
                              validate_only=True, request_timeout=15)
    assert expect_error(futures[topic]) == KafkaError.INVALID_CONFIG
    assert topic not in kc.topics(broker.bootstrap, a)
    # and the real thing afterwards works
    kc.create_topic(broker.bootstrap, topic, partitions=2)


def test_invalid_topic_config_value_is_refused(broker):
    a = kc.admin(broker.bootstrap)
    topic = unique("badcfg")
    futures = a.create_topics([NewTopic(topic, 1, 1, config={"retention.ms": "forever"})], request_timeout=15)
    assert expect_error(futures[topic]) == KafkaError.INVALID_CONFIG
    assert topic not in kc.topics(broker.bootstrap, a)


def test_create_existing_topic_fails_with_topic_already_exists(broker):
    topic = kc.create_topic(broker.bootstrap, unique("dup"), partitions=1)
    kc.produce_confluent(broker.bootstrap, topic, [Rec(value=b"keep me", partition=0)])
    a = kc.admin(broker.bootstrap)
    code = expect_error(a.create_topics([NewTopic(topic, 3, 1)], request_timeout=15)[topic])
    assert code == KafkaError.TOPIC_ALREADY_EXISTS
    assert kc.topics(broker.bootstrap, a)[topic] == 1, "the failed create changed the topic"
    assert kc.watermarks(broker.bootstrap, topic) == (0, 1), "the failed create changed the data"


def test_delete_topic_then_create_it_again_empty(broker):
    a = kc.admin(broker.bootstrap)
    topic = kc.create_topic(broker.bootstrap, unique("del"), partitions=2)
    kc.produce_confluent(broker.bootstrap, topic, [Rec(value=f"old-{i}".encode(), partition=i % 2)
                                                   for i in range(10)])
    a.delete_topics([topic], operation_timeout=20, request_timeout=20)[topic].result(timeout=30)
    wait_until(lambda: topic not in kc.topics(broker.bootstrap, a), 15, f"{topic} to leave metadata")
    # deleting it again: it is unknown now
    code = expect_error(a.delete_topics([topic], request_timeout=15)[topic])
    assert code == KafkaError.UNKNOWN_TOPIC_OR_PART

    kc.create_topic(broker.bootstrap, topic, partitions=1)
    assert kc.topics(broker.bootstrap, a)[topic] == 1
    assert kc.watermarks(broker.bootstrap, topic, 0) == (0, 0), "the re-created topic has old data"
    delivered = kc.produce_confluent(broker.bootstrap, topic, [Rec(value=b"new", partition=0)])
    assert delivered[0].offset == 0
    got = kc.consume_confluent(broker.bootstrap, topic, [0], 1, settle=0.5)
    assert [c.value for c in got] == [b"new"]


def test_deleted_topic_stays_deleted_after_restart(broker):
    a = kc.admin(broker.bootstrap)
    gone = kc.create_topic(broker.bootstrap, unique("gone"))
    kept = kc.create_topic(broker.bootstrap, unique("kept"))
    kc.produce_confluent(broker.bootstrap, gone, [Rec(value=b"x", partition=0)])
    a.delete_topics([gone], operation_timeout=20, request_timeout=20)[gone].result(timeout=30)
    wait_until(lambda: gone not in kc.topics(broker.bootstrap, a), 15, f"{gone} to leave metadata")
    broker.restart()
    after = kc.topics(broker.bootstrap)
    assert gone not in after and kept in after, after


def test_describe_cluster_lists_the_broker_and_controller(broker):
    a = kc.admin(broker.bootstrap)
    md = a.list_topics(timeout=10)
    cluster = a.describe_cluster(request_timeout=15).result(timeout=30)
    assert cluster.cluster_id and cluster.cluster_id == md.cluster_id
    assert len(cluster.nodes) == 1
    node = cluster.nodes[0]
    assert (node.host, node.port) == (broker.host, broker.port)
    assert node.id in md.brokers
    assert cluster.controller is not None and cluster.controller.id == node.id
    assert md.controller_id == node.id


def test_metadata_lists_broker_and_partition_leaders(broker):
    topic = kc.create_topic(broker.bootstrap, unique("md"), partitions=3)
    md = kc.admin(broker.bootstrap).list_topics(timeout=10)
    assert list(md.brokers) and all((b.host, b.port) == (broker.host, broker.port) for b in md.brokers.values())
    t = md.topics[topic]
    assert sorted(t.partitions) == [0, 1, 2]
    for p in t.partitions.values():
        assert p.error is None and p.leader in md.brokers
        assert p.replicas == [p.leader] and p.isrs == [p.leader]


def test_auto_create_on_metadata_uses_num_partitions(make_broker):
    b = make_broker({"num.partitions": "3"})
    topic = unique("auto")
    producer = kafka.KafkaProducer(bootstrap_servers=b.bootstrap)
    try:
        md = producer.send(topic, value=b"first", key=b"k").get(timeout=30)
        assert md.offset == 0
        assert producer.partitions_for(topic) == {0, 1, 2}
    finally:
        producer.close(timeout=10)
    kc.wait_for_topic(b.bootstrap, topic, 3)
    got = kc.consume_confluent(b.bootstrap, topic, [0, 1, 2], 1, settle=0.3)
    assert [(c.key, c.value) for c in got] == [(b"k", b"first")]


def test_no_auto_create_when_disabled(make_broker):
    b = make_broker({"auto.create.topics.enable": "false"})
    topic = unique("noauto")
    producer = kafka.KafkaProducer(bootstrap_servers=b.bootstrap, max_block_ms=3000)
    try:
        with pytest.raises((kafka.errors.KafkaTimeoutError, kafka.errors.UnknownTopicOrPartitionError)):
            producer.send(topic, value=b"nowhere").get(timeout=10)
    finally:
        producer.close(timeout=5)
    assert topic not in kc.topics(b.bootstrap)
    # explicitly created topics work as usual
    kc.create_topic(b.bootstrap, topic)
    assert kc.produce_kafka_python(b.bootstrap, topic, [Rec(value=b"here")])[0].offset == 0


def describe_configs(bootstrap: str, kind: str, name: str) -> dict:
    from confluent_kafka.admin import ConfigResource
    a = kc.admin(bootstrap)
    (fut,) = a.describe_configs([ConfigResource(kind, name)], request_timeout=15).values()
    return fut.result(timeout=30)


def test_describe_configs_shows_a_topics_overrides_and_defaults(broker):
    """DescribeConfigs (confluent-kafka): each topic config with its value and
    source: the topic's override, or the default it falls back on."""
    from confluent_kafka.admin import ConfigSource
    topic = kc.create_topic(broker.bootstrap, unique("dcfg"), config={"retention.ms": "86400000"})
    configs = describe_configs(broker.bootstrap, "topic", topic)
    retention = configs["retention.ms"]
    assert retention.value == "86400000"
    assert retention.source == ConfigSource.DYNAMIC_TOPIC_CONFIG.value
    assert not retention.is_default and not retention.is_read_only
    segment = configs["segment.bytes"]
    assert segment.value == "1073741824"
    assert segment.source == ConfigSource.DEFAULT_CONFIG.value and segment.is_default
    assert configs["cleanup.policy"].value == "delete"
    assert "max.message.bytes" in configs and "min.insync.replicas" in configs


def test_describe_configs_names_the_broker_key_a_topic_config_falls_back_on(make_broker):
    from confluent_kafka.admin import ConfigSource
    b = make_broker({"log.segment.bytes": "2097152"})
    topic = kc.create_topic(b.bootstrap, unique("dsyn"))
    segment = describe_configs(b.bootstrap, "topic", topic)["segment.bytes"]
    assert segment.value == "2097152"
    assert segment.source == ConfigSource.STATIC_BROKER_CONFIG.value
    # Kafka lists the broker key twice (its static value, then its default);
    # confluent-kafka keeps synonyms in a dict by name, so one entry is seen.
    assert list(segment.synonyms) == ["log.segment.bytes"], segment.synonyms


def test_describe_configs_of_a_missing_topic_is_unknown_topic(broker):
    with pytest.raises(KafkaException) as e:
        describe_configs(broker.bootstrap, "topic", unique("nosuch"))
    assert e.value.args[0].code() == KafkaError.UNKNOWN_TOPIC_OR_PART


def test_describe_configs_of_the_broker_lists_its_configuration(make_broker):
    from confluent_kafka.admin import ConfigSource
    b = make_broker({"num.partitions": "3"})
    node = kc.admin(b.bootstrap).list_topics(timeout=10).controller_id
    configs = describe_configs(b.bootstrap, "broker", str(node))
    assert configs["num.partitions"].value == "3"
    assert configs["num.partitions"].source == ConfigSource.STATIC_BROKER_CONFIG.value
    assert configs["log.retention.hours"].value == "168"
    assert configs["log.retention.hours"].source == ConfigSource.DEFAULT_CONFIG.value
    assert all(c.is_read_only for c in configs.values())


def test_create_partitions_grows_a_topic_that_then_serves_every_partition(broker):
    """CreatePartitions (confluent-kafka): a topic grows from 2 to 5
    partitions; the new ones take records; shrinking or keeping the count is
    INVALID_PARTITIONS; validate_only changes nothing."""
    from confluent_kafka.admin import NewPartitions
    a = kc.admin(broker.bootstrap)
    topic = kc.create_topic(broker.bootstrap, unique("grow"), partitions=2)
    (fut,) = a.create_partitions([NewPartitions(topic, 4)], validate_only=True).values()
    fut.result(timeout=30)
    assert kc.topics(broker.bootstrap)[topic] == 2
    (fut,) = a.create_partitions([NewPartitions(topic, 5)], request_timeout=15).values()
    fut.result(timeout=30)
    assert kc.topics(broker.bootstrap)[topic] == 5
    for p in range(5):
        delivered = kc.produce_confluent(broker.bootstrap, topic, [Rec(value=b"v%d" % p, partition=p)])
        assert len(delivered) == 1
        assert kc.watermarks(broker.bootstrap, topic, p) == (0, 1)
    for count in (5, 3):
        (fut,) = a.create_partitions([NewPartitions(topic, count)]).values()
        assert expect_error(fut) == KafkaError.INVALID_PARTITIONS
    (fut,) = a.create_partitions([NewPartitions(unique("nosuch"), 3)]).values()
    assert expect_error(fut) == KafkaError.UNKNOWN_TOPIC_OR_PART


def test_create_partitions_with_an_assignment_checks_its_brokers(broker):
    from confluent_kafka.admin import NewPartitions
    a = kc.admin(broker.bootstrap)
    node = a.list_topics(timeout=10).controller_id
    topic = kc.create_topic(broker.bootstrap, unique("assign"), partitions=1)
    (fut,) = a.create_partitions([NewPartitions(topic, 2, replica_assignment=[[node + 100]])]).values()
    assert expect_error(fut) == KafkaError.INVALID_REPLICA_ASSIGNMENT
    (fut,) = a.create_partitions([NewPartitions(topic, 3, replica_assignment=[[node]])]).values()
    assert expect_error(fut) == KafkaError.INVALID_REPLICA_ASSIGNMENT
    (fut,) = a.create_partitions([NewPartitions(topic, 3, replica_assignment=[[node], [node]])]).values()
    fut.result(timeout=30)
    assert kc.topics(broker.bootstrap)[topic] == 3


def test_incremental_alter_configs_changes_what_the_partitions_enforce(broker):
    """IncrementalAlterConfigs (confluent-kafka): SET max.message.bytes is
    enforced by the topic's partitions at once; DELETE brings the default
    back; APPEND and SUBTRACT edit cleanup.policy; a bad key or value is
    INVALID_CONFIG and changes nothing."""
    from confluent_kafka.admin import AlterConfigOpType, ConfigEntry, ConfigResource, ConfigSource
    a = kc.admin(broker.bootstrap)
    topic = kc.create_topic(broker.bootstrap, unique("alter"))

    def alter(*ops):
        res = ConfigResource("topic", topic, incremental_configs=[
            ConfigEntry(name, value, incremental_operation=op) for name, value, op in ops])
        (fut,) = a.incremental_alter_configs([res]).values()
        return fut

    alter(("max.message.bytes", "2000", AlterConfigOpType.SET)).result(timeout=30)
    big = Rec(value=b"z" * 5000, partition=0)
    with pytest.raises(Exception):
        kc.produce_confluent(broker.bootstrap, topic, [big], config={"message.max.bytes": 100000,
                                                                      "message.timeout.ms": 5000})
    configs = describe_configs(broker.bootstrap, "topic", topic)
    assert configs["max.message.bytes"].value == "2000"
    assert configs["max.message.bytes"].source == ConfigSource.DYNAMIC_TOPIC_CONFIG.value

    alter(("max.message.bytes", None, AlterConfigOpType.DELETE)).result(timeout=30)
    assert len(kc.produce_confluent(broker.bootstrap, topic, [big], config={"message.max.bytes": 100000})) == 1
    assert describe_configs(broker.bootstrap, "topic", topic)["max.message.bytes"].is_default

    alter(("cleanup.policy", "compact", AlterConfigOpType.APPEND)).result(timeout=30)
    assert describe_configs(broker.bootstrap, "topic", topic)["cleanup.policy"].value == "delete,compact"
    alter(("cleanup.policy", "delete", AlterConfigOpType.SUBTRACT)).result(timeout=30)
    assert describe_configs(broker.bootstrap, "topic", topic)["cleanup.policy"].value == "compact"

    assert expect_error(alter(("no.such.config", "1", AlterConfigOpType.SET))) == KafkaError.INVALID_CONFIG
    assert expect_error(alter(("retention.ms", "soon", AlterConfigOpType.SET))) == KafkaError.INVALID_CONFIG
    assert expect_error(alter(("retention.ms", "1", AlterConfigOpType.APPEND))) == KafkaError.INVALID_CONFIG
    assert describe_configs(broker.bootstrap, "topic", topic)["retention.ms"].is_default


def test_alter_configs_replaces_a_topics_overrides(broker):
    """AlterConfigs (the legacy API): the given set replaces the overrides."""
    a = kc.admin(broker.bootstrap)
    topic = kc.create_topic(broker.bootstrap, unique("replace"), config={"retention.ms": "86400000"})
    from confluent_kafka.admin import ConfigResource
    (fut,) = a.alter_configs([ConfigResource("topic", topic, set_config={"segment.ms": "3600000"})]).values()
    fut.result(timeout=30)
    configs = describe_configs(broker.bootstrap, "topic", topic)
    assert configs["segment.ms"].value == "3600000" and not configs["segment.ms"].is_default
    assert configs["retention.ms"].is_default


def test_a_compacted_topic_refuses_just_the_records_without_a_key(broker):
    """A compacted topic takes no record without a key: the answer names the
    records (KIP-467), so librdkafka fails those with INVALID_RECORD and the
    rest of their batch with _INVALID_DIFFERENT_RECORD; a batch of keyed
    records goes through."""
    from confluent_kafka import Producer
    topic = kc.create_topic(broker.bootstrap, unique("compacted"), config={"cleanup.policy": "compact"})
    p = Producer({"bootstrap.servers": broker.bootstrap, "linger.ms": 100, "retries": 0})
    errors = []
    for i in range(10):
        p.produce(topic, value=b"v%d" % i, key=None if i in (2, 7) else b"k%d" % i, partition=0,
                  on_delivery=lambda e, m: errors.append(e.code() if e else None))
    assert p.flush(30) == 0
    assert errors.count(KafkaError.INVALID_RECORD) == 2, errors
    assert errors.count(KafkaError._INVALID_DIFFERENT_RECORD) == 8, errors
    assert kc.watermarks(broker.bootstrap, topic, 0) == (0, 0)
    delivered = kc.produce_confluent(broker.bootstrap, topic, [Rec(key=b"k", value=b"v", partition=0)])
    assert len(delivered) == 1 and kc.watermarks(broker.bootstrap, topic, 0) == (0, 1)
