package felice.jvm;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertInstanceOf;
import static org.junit.jupiter.api.Assertions.assertNotEquals;
import static org.junit.jupiter.api.Assertions.assertNotNull;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.time.Duration;
import java.util.ArrayList;
import java.util.Collection;
import java.util.HashMap;
import java.util.List;
import java.util.Map;
import java.util.Set;
import java.util.TreeMap;
import java.util.concurrent.ExecutionException;
import java.util.stream.Collectors;

import org.apache.kafka.clients.admin.Admin;
import org.apache.kafka.clients.admin.AlterConfigOp;
import org.apache.kafka.clients.admin.ConfigEntry;
import org.apache.kafka.clients.admin.ConsumerGroupDescription;
import org.apache.kafka.clients.admin.DescribeClusterOptions;
import org.apache.kafka.clients.admin.DescribeClusterResult;
import org.apache.kafka.clients.admin.GroupListing;
import org.apache.kafka.clients.admin.ListGroupsOptions;
import org.apache.kafka.clients.admin.ListOffsetsResult.ListOffsetsResultInfo;
import org.apache.kafka.clients.admin.ListTopicsOptions;
import org.apache.kafka.clients.admin.MemberDescription;
import org.apache.kafka.clients.admin.NewPartitions;
import org.apache.kafka.clients.admin.NewTopic;
import org.apache.kafka.clients.admin.OffsetSpec;
import org.apache.kafka.clients.admin.DescribeProducersResult.PartitionProducerState;
import org.apache.kafka.clients.admin.ProducerState;
import org.apache.kafka.clients.admin.RecordsToDelete;
import org.apache.kafka.clients.admin.TopicDescription;
import org.apache.kafka.clients.consumer.ConsumerConfig;
import org.apache.kafka.clients.consumer.KafkaConsumer;
import org.apache.kafka.clients.consumer.OffsetAndMetadata;
import org.apache.kafka.clients.consumer.RangeAssignor;
import org.apache.kafka.clients.producer.KafkaProducer;
import org.apache.kafka.clients.producer.ProducerRecord;
import org.apache.kafka.clients.producer.RecordMetadata;
import org.apache.kafka.common.GroupState;
import org.apache.kafka.common.GroupType;
import org.apache.kafka.common.Node;
import org.apache.kafka.common.TopicPartition;
import org.apache.kafka.common.TopicCollection;
import org.apache.kafka.common.TopicPartitionInfo;
import org.apache.kafka.common.Uuid;
import org.apache.kafka.common.acl.AclOperation;
import org.apache.kafka.common.config.ConfigResource;
import org.apache.kafka.common.errors.GroupSubscribedToTopicException;
import org.apache.kafka.common.errors.InvalidPartitionsException;
import org.apache.kafka.common.errors.TopicExistsException;
import org.apache.kafka.common.errors.UnknownTopicIdException;
import org.apache.kafka.common.errors.UnknownTopicOrPartitionException;
import org.apache.kafka.common.errors.UnsupportedVersionException;
import org.junit.jupiter.api.AfterAll;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;

/**
 * Kafka's Admin client against Felice: the calls a Kafka operator or tool
 * makes, each checked against what Apache Kafka 4.1 answers.
 */
class AdminClientTest {
    static final Duration WAIT = Duration.ofSeconds(30);

    static FeliceBroker broker;
    static Admin admin;

    @BeforeAll
    static void startBroker() {
        broker = FeliceBroker.start("AdminClientTest");
        admin = Support.admin(broker);
    }

    @AfterAll
    static void stopBroker() throws Exception {
        Support.closeAll(admin, broker);
    }

    // Topic life cycle: a created topic is listed and described with the
    // partition count asked for (one replica, led by the only broker, in
    // sync); creating it again and creating one with 0 partitions fail with
    // Kafka's errors; a deleted topic is no longer listed or describable.
    @Test
    void createDescribeListDeleteTopics() throws Exception {
        String a = Support.unique("admin-a");
        String b = Support.unique("admin-b");
        admin.createTopics(List.of(new NewTopic(a, 3, (short) 1),
                new NewTopic(b, 1, (short) 1).configs(Map.of("cleanup.policy", "compact", "retention.ms", "3600000"))))
                .all().get();

        Set<String> names = admin.listTopics().names().get();
        assertTrue(names.containsAll(Set.of(a, b)), "listTopics: " + names);

        Map<String, TopicDescription> described = admin.describeTopics(List.of(a, b)).allTopicNames().get();
        TopicDescription da = described.get(a);
        assertEquals(a, da.name());
        assertFalse(da.isInternal());
        assertNotNull(da.topicId());
        assertNotEquals(Uuid.ZERO_UUID, da.topicId(), "a real topic id");
        assertEquals(3, da.partitions().size());
        Node self = admin.describeCluster().nodes().get().iterator().next();
        for (int p = 0; p < 3; p++) {
            TopicPartitionInfo info = da.partitions().get(p);
            assertEquals(p, info.partition());
            assertEquals(self, info.leader(), "leader of partition " + p);
            assertEquals(List.of(self), info.replicas());
            assertEquals(List.of(self), info.isr());
        }
        assertEquals(1, described.get(b).partitions().size());

        // Internal topics are listed only when asked for (Felice may have none).
        Set<String> withInternal = admin.listTopics(new ListTopicsOptions().listInternal(true)).names().get();
        assertTrue(withInternal.containsAll(names));

        ExecutionException exists = assertThrows(ExecutionException.class,
                () -> admin.createTopics(List.of(new NewTopic(a, 3, (short) 1))).all().get());
        assertInstanceOf(TopicExistsException.class, exists.getCause(), Support.causes(exists));

        ExecutionException zero = assertThrows(ExecutionException.class,
                () -> admin.createTopics(List.of(new NewTopic(Support.unique("zero"), 0, (short) 1))).all().get());
        assertInstanceOf(InvalidPartitionsException.class, zero.getCause(), Support.causes(zero));

        admin.deleteTopics(List.of(a, b)).all().get();
        Support.waitUntil(WAIT, "deleted topics unlisted", () -> {
            try {
                Set<String> now = admin.listTopics().names().get();
                return !now.contains(a) && !now.contains(b);
            } catch (Exception e) {
                throw new AssertionError(e);
            }
        });
        ExecutionException gone = assertThrows(ExecutionException.class,
                () -> admin.describeTopics(List.of(a)).allTopicNames().get());
        assertInstanceOf(UnknownTopicOrPartitionException.class, gone.getCause(), Support.causes(gone));
    }

    // Topics looked up by id (Admin#describeTopics(TopicCollection.ofTopicIds),
    // also what kafka-topics --describe --topic-id does): the Java client
    // sends Metadata v12+ with topicId set and name = "" (not null); Kafka
    // uses the id whenever it is non-zero. Deleting by id is checked too.
    @Test
    void describeTopicsByTopicId() throws Exception {
        String topic = Support.unique("admin-by-id");
        Support.createTopic(admin, topic, 2);
        Uuid id = admin.describeTopics(List.of(topic)).allTopicNames().get().get(topic).topicId();
        Map<Uuid, TopicDescription> byId = admin.describeTopics(TopicCollection.ofTopicIds(List.of(id)))
                .allTopicIds().get();
        assertEquals(topic, byId.get(id).name());
        assertEquals(2, byId.get(id).partitions().size());

        Uuid unknown = Uuid.randomUuid();
        ExecutionException e = assertThrows(ExecutionException.class,
                () -> admin.describeTopics(TopicCollection.ofTopicIds(List.of(unknown))).allTopicIds().get());
        assertInstanceOf(UnknownTopicIdException.class, e.getCause(), Support.causes(e));

        admin.deleteTopics(TopicCollection.ofTopicIds(List.of(id))).all().get();
        assertFalse(admin.listTopics().names().get().contains(topic));
    }

    // describeCluster with includeAuthorizedOperations: a broker without an
    // authorizer answers with the cluster operations the caller may perform
    // (Kafka 4.1: CLUSTER_ACTION, ALTER, CREATE, DESCRIBE, IDEMPOTENT_WRITE,
    // ALTER_CONFIGS, DESCRIBE_CONFIGS), in Metadata and in DescribeCluster
    // (which the 4.x Admin client uses).
    @Test
    void describeClusterAuthorizedOperations() throws Exception {
        Set<AclOperation> ops = admin.describeCluster(new DescribeClusterOptions().includeAuthorizedOperations(true))
                .authorizedOperations().get();
        assertNotNull(ops, "authorized operations requested, so answered");
        assertEquals(Set.of(AclOperation.CLUSTER_ACTION, AclOperation.ALTER, AclOperation.CREATE,
                AclOperation.DESCRIBE, AclOperation.IDEMPOTENT_WRITE, AclOperation.ALTER_CONFIGS,
                AclOperation.DESCRIBE_CONFIGS), ops);
        // Not requested: null.
        assertEquals(null, admin.describeCluster().authorizedOperations().get());
    }

    // describeCluster: one node, the one we connected to, which is also the
    // controller the cluster reports; a cluster id is set.
    @Test
    void describeCluster() throws Exception {
        DescribeClusterResult cluster = admin.describeCluster();
        Collection<Node> nodes = cluster.nodes().get();
        assertEquals(1, nodes.size(), "nodes: " + nodes);
        Node node = nodes.iterator().next();
        assertEquals("127.0.0.1", node.host());
        assertEquals(broker.port(), node.port());
        String clusterId = cluster.clusterId().get();
        assertNotNull(clusterId);
        assertFalse(clusterId.isEmpty());
        Node controller = cluster.controller().get();
        assertEquals(node.id(), controller.id(), "the only node is the controller");
    }

    // Groups as the Admin client sees them: a live classic group is listed
    // (type classic, protocol type consumer, state Stable) and described with
    // its member and assignment; after the member leaves it is Empty but still
    // has its commits.
    @Test
    void listAndDescribeConsumerGroups() throws Exception {
        String topic = Support.unique("admin-groups");
        String group = Support.unique("admin-g");
        Support.createTopic(admin, topic, 2);
        try (KafkaConsumer<String, String> c = Support.stringConsumer(broker, Map.of(
                ConsumerConfig.GROUP_ID_CONFIG, group,
                ConsumerConfig.CLIENT_ID_CONFIG, "admin-test-client",
                ConsumerConfig.PARTITION_ASSIGNMENT_STRATEGY_CONFIG, RangeAssignor.class.getName()))) {
            c.subscribe(List.of(topic));
            Support.waitUntil(WAIT, "an assignment", () -> !c.poll(Duration.ofMillis(100)).isEmpty()
                    || c.assignment().size() == 2);
            c.commitSync(Map.of(new TopicPartition(topic, 0), new OffsetAndMetadata(0)));

            Collection<GroupListing> listed = admin.listGroups(ListGroupsOptions.forConsumerGroups()).all().get();
            GroupListing listing = listed.stream().filter(g -> g.groupId().equals(group)).findFirst()
                    .orElseThrow(() -> new AssertionError(group + " not listed: " + listed));
            assertEquals(GroupType.CLASSIC, listing.type().orElseThrow(), listing.toString());
            assertEquals("consumer", listing.protocol());
            assertEquals(GroupState.STABLE, listing.groupState().orElseThrow(), listing.toString());
            assertFalse(listing.isSimpleConsumerGroup());

            // The older call (deprecated in 4.x, still what many tools use).
            @SuppressWarnings("deprecation")
            Collection<org.apache.kafka.clients.admin.ConsumerGroupListing> legacy =
                    admin.listConsumerGroups().all().get();
            assertTrue(legacy.stream().anyMatch(g -> g.groupId().equals(group)), legacy.toString());

            ConsumerGroupDescription d = admin.describeConsumerGroups(List.of(group)).describedGroups()
                    .get(group).get();
            assertEquals(group, d.groupId());
            assertEquals(GroupType.CLASSIC, d.type());
            assertEquals(GroupState.STABLE, d.groupState());
            assertEquals("range", d.partitionAssignor());
            assertEquals(broker.port(), d.coordinator().port());
            assertEquals(1, d.members().size(), d.toString());
            MemberDescription m = d.members().iterator().next();
            assertEquals("admin-test-client", m.clientId());
            assertEquals(Set.of(new TopicPartition(topic, 0), new TopicPartition(topic, 1)),
                    m.assignment().topicPartitions());
        }
        ConsumerGroupDescription empty = admin.describeConsumerGroups(List.of(group)).describedGroups()
                .get(group).get();
        assertEquals(GroupState.EMPTY, empty.groupState(), empty.toString());
        assertTrue(empty.members().isEmpty());
        Map<TopicPartition, OffsetAndMetadata> offsets = admin.listConsumerGroupOffsets(group)
                .partitionsToOffsetAndMetadata().get();
        assertEquals(0L, offsets.get(new TopicPartition(topic, 0)).offset());

        // Filtering by state: the group now lists as Empty, not as Stable.
        Collection<GroupListing> stable = admin.listGroups(ListGroupsOptions.forConsumerGroups()
                .inGroupStates(Set.of(GroupState.STABLE))).all().get();
        assertTrue(stable.stream().noneMatch(g -> g.groupId().equals(group)), stable.toString());
        Collection<GroupListing> emptyOnes = admin.listGroups(ListGroupsOptions.forConsumerGroups()
                .inGroupStates(Set.of(GroupState.EMPTY))).all().get();
        assertTrue(emptyOnes.stream().anyMatch(g -> g.groupId().equals(group)), emptyOnes.toString());

        admin.deleteConsumerGroups(List.of(group)).all().get();
        Collection<GroupListing> after = admin.listGroups(ListGroupsOptions.forConsumerGroups()).all().get();
        assertTrue(after.stream().noneMatch(g -> g.groupId().equals(group)), after.toString());
    }

    // ListOffsets: earliest and latest, by timestamp (the first record at or
    // after it, or -1 past the last one), and the record with the largest
    // timestamp (Kafka 3.0's max-timestamp spec), on records whose CreateTime
    // the producer set: 10 records, one second apart, the 8th out of order
    // with the largest timestamp.
    @Test
    void listOffsetsEarliestLatestByTimestamp() throws Exception {
        String topic = Support.unique("admin-offsets");
        Support.createTopic(admin, topic, 1);
        TopicPartition tp = new TopicPartition(topic, 0);
        long t0 = System.currentTimeMillis() - 600_000L;
        List<Long> stamps = new ArrayList<>();
        try (KafkaProducer<String, String> p = Support.stringProducer(broker, Map.of())) {
            for (int i = 0; i < 10; i++) {
                long ts = i == 7 ? t0 + 60_000 : t0 + i * 1000L;
                stamps.add(ts);
                p.send(new ProducerRecord<>(topic, 0, ts, "k" + i, "v" + i)).get();
            }
        }
        assertEquals(0, list(tp, OffsetSpec.earliest()).offset());
        assertEquals(10, list(tp, OffsetSpec.latest()).offset());
        ListOffsetsResultInfo at = list(tp, OffsetSpec.forTimestamp(t0 + 3500));
        assertEquals(4, at.offset(), "first record with timestamp >= t0+3500");
        assertEquals(t0 + 4000, at.timestamp());
        ListOffsetsResultInfo exact = list(tp, OffsetSpec.forTimestamp(t0));
        assertEquals(0, exact.offset());
        assertEquals(t0, exact.timestamp());
        ListOffsetsResultInfo late = list(tp, OffsetSpec.forTimestamp(t0 + 8500));
        assertEquals(7, late.offset(), "offset 7 (t0+60s) is the first at or after t0+8.5s");
        ListOffsetsResultInfo past = list(tp, OffsetSpec.forTimestamp(t0 + 120_000));
        assertEquals(-1, past.offset(), "no record at or after: offset -1");
        assertEquals(-1, past.timestamp());
        ListOffsetsResultInfo max = list(tp, OffsetSpec.maxTimestamp());
        assertEquals(7, max.offset(), "the record with the largest timestamp");
        assertEquals(t0 + 60_000, max.timestamp());
    }

    private static ListOffsetsResultInfo list(TopicPartition tp, OffsetSpec spec) throws Exception {
        return admin.listOffsets(Map.of(tp, spec)).partitionResult(tp).get();
    }

    // describeConfigs (DescribeConfigs, API 32): a topic's override with its
    // source, a default with its broker synonym, and the broker's own
    // configuration, read-only (Felice has no dynamic broker configs).
    @Test
    void describeConfigs() throws Exception {
        String topic = Support.unique("admin-configs");
        admin.createTopics(List.of(new NewTopic(topic, 1, (short) 1).configs(Map.of("cleanup.policy", "compact"))))
                .all().get();
        ConfigResource resource = new ConfigResource(ConfigResource.Type.TOPIC, topic);
        org.apache.kafka.clients.admin.Config config = admin.describeConfigs(List.of(resource),
                new org.apache.kafka.clients.admin.DescribeConfigsOptions().includeSynonyms(true))
                .all().get().get(resource);
        ConfigEntry policy = config.get("cleanup.policy");
        assertEquals("compact", policy.value());
        assertEquals(ConfigEntry.ConfigSource.DYNAMIC_TOPIC_CONFIG, policy.source());
        assertEquals(ConfigEntry.ConfigType.LIST, policy.type());
        ConfigEntry retention = config.get("retention.ms");
        assertEquals("604800000", retention.value());
        assertEquals(ConfigEntry.ConfigSource.DEFAULT_CONFIG, retention.source());
        assertTrue(retention.isDefault());
        ConfigEntry segment = config.get("segment.bytes");
        assertEquals("log.segment.bytes", segment.synonyms().get(0).name());
        assertEquals("1073741824", segment.synonyms().get(0).value());
        assertEquals(ConfigEntry.ConfigSource.DEFAULT_CONFIG, segment.synonyms().get(0).source());

        ConfigResource brokerResource = new ConfigResource(ConfigResource.Type.BROKER, "1");
        org.apache.kafka.clients.admin.Config brokerConfig = admin.describeConfigs(List.of(brokerResource))
                .all().get().get(brokerResource);
        ConfigEntry partitions = brokerConfig.get("num.partitions");
        assertNotNull(partitions, brokerConfig.toString());
        assertTrue(partitions.isReadOnly());
        ConfigResource missing = new ConfigResource(ConfigResource.Type.TOPIC, Support.unique("admin-missing"));
        ExecutionException e = assertThrows(ExecutionException.class,
                () -> admin.describeConfigs(List.of(missing)).all().get());
        assertInstanceOf(org.apache.kafka.common.errors.UnknownTopicOrPartitionException.class, e.getCause(),
                Support.causes(e));
    }

    // createPartitions grows the topic and incrementalAlterConfigs changes
    // its configs. Recorded gap: deleteRecords (DeleteRecords, API 21) is not
    // advertised, so the client fails it with UnsupportedVersionException;
    // it turns green when the API lands (low watermark 2).
    @Test
    void createPartitionsAlterConfigsAndRecordedGapDeleteRecords() throws Exception {
        String topic = Support.unique("admin-gaps");
        Support.createTopic(admin, topic, 1);
        TopicPartition tp = new TopicPartition(topic, 0);
        try (KafkaProducer<String, String> p = Support.stringProducer(broker, Map.of())) {
            for (int i = 0; i < 3; i++) {
                p.send(new ProducerRecord<>(topic, 0, "k", "v" + i)).get();
            }
        }
        // createPartitions (CreatePartitions, API 37) works: 3 partitions.
        admin.createPartitions(Map.of(topic, NewPartitions.increaseTo(3))).all().get();
        assertEquals(3, admin.describeTopics(List.of(topic)).allTopicNames().get().get(topic).partitions().size());

        ExecutionException delete = assertThrows(ExecutionException.class, () -> admin.deleteRecords(
                Map.of(tp, RecordsToDelete.beforeOffset(2))).lowWatermarks().get(tp).get());
        assertInstanceOf(UnsupportedVersionException.class, delete.getCause(), Support.causes(delete));
        assertEquals("The node does not support DELETE_RECORDS", delete.getCause().getMessage());

        // incrementalAlterConfigs (API 44): SET, then APPEND to a list.
        ConfigResource resource = new ConfigResource(ConfigResource.Type.TOPIC, topic);
        admin.incrementalAlterConfigs(Map.of(resource, List.of(
                new AlterConfigOp(new ConfigEntry("retention.ms", "60000"), AlterConfigOp.OpType.SET),
                new AlterConfigOp(new ConfigEntry("cleanup.policy", "compact"), AlterConfigOp.OpType.APPEND))))
                .all().get();
        org.apache.kafka.clients.admin.Config after = admin.describeConfigs(List.of(resource)).all().get()
                .get(resource);
        assertEquals("60000", after.get("retention.ms").value());
        assertEquals("delete,compact", after.get("cleanup.policy").value());
    }

    // Committed offsets set and removed by an operator: alterConsumerGroupOffsets
    // (OffsetCommit for an empty group) and deleteConsumerGroupOffsets
    // (OffsetDelete). Kafka refuses to delete the offsets of a partition whose
    // topic a live member is subscribed to (GROUP_SUBSCRIBED_TO_TOPIC).
    @Test
    void alterAndDeleteConsumerGroupOffsets() throws Exception {
        String topic = Support.unique("admin-alter");
        String group = Support.unique("admin-alter-g");
        Support.createTopic(admin, topic, 3);
        TopicPartition p0 = new TopicPartition(topic, 0);
        TopicPartition p1 = new TopicPartition(topic, 1);
        TopicPartition p2 = new TopicPartition(topic, 2);
        try (KafkaProducer<String, String> p = Support.stringProducer(broker, Map.of())) {
            for (int i = 0; i < 30; i++) {
                p.send(new ProducerRecord<>(topic, i % 3, "k", "v" + i)).get();
            }
        }
        admin.alterConsumerGroupOffsets(group, Map.of(
                p0, new OffsetAndMetadata(3, "set by admin"),
                p1, new OffsetAndMetadata(5),
                p2, new OffsetAndMetadata(10))).all().get();
        Map<TopicPartition, OffsetAndMetadata> got = admin.listConsumerGroupOffsets(group)
                .partitionsToOffsetAndMetadata().get();
        assertEquals(3, got.get(p0).offset());
        assertEquals("set by admin", got.get(p0).metadata());
        assertEquals(5, got.get(p1).offset());
        assertEquals(10, got.get(p2).offset());

        // A consumer of the group starts at the altered offsets.
        try (KafkaConsumer<String, String> c = Support.stringConsumer(broker, Map.of(
                ConsumerConfig.GROUP_ID_CONFIG, group))) {
            c.subscribe(List.of(topic));
            var records = Support.pollCount(c, 7 + 5 + 0, WAIT);
            Map<Integer, Long> first = new TreeMap<>();
            records.forEach(r -> first.merge(r.partition(), r.offset(), Math::min));
            assertEquals(Map.of(0, 3L, 1, 5L), first, "started at the altered offsets; p2 already at its end");

            // While the member is subscribed, its topic's offsets cannot be deleted.
            ExecutionException live = assertThrows(ExecutionException.class,
                    () -> admin.deleteConsumerGroupOffsets(group, Set.of(p1)).partitionResult(p1).get());
            assertInstanceOf(GroupSubscribedToTopicException.class, live.getCause(), Support.causes(live));
        }

        admin.deleteConsumerGroupOffsets(group, Set.of(p1, p2)).all().get();
        Map<TopicPartition, OffsetAndMetadata> left = admin.listConsumerGroupOffsets(group)
                .partitionsToOffsetAndMetadata().get();
        assertEquals(Set.of(p0), left.keySet(), "only p0 keeps a commit: " + left);
        assertEquals(3, left.get(p0).offset());
    }

    // DescribeProducers on a partition written by two idempotent producers:
    // both are active, with their own producer ids, epoch 0, the sequence of
    // their last record and its timestamp, and no open transaction.
    @Test
    void describeProducersAfterIdempotentWrites() throws Exception {
        String topic = Support.unique("admin-producers");
        Support.createTopic(admin, topic, 1);
        TopicPartition tp = new TopicPartition(topic, 0);
        long base = System.currentTimeMillis() - 10_000;
        Map<Integer, Long> lastTimestamps = new HashMap<>();
        for (int producer = 0; producer < 2; producer++) {
            int count = producer == 0 ? 5 : 12;
            try (KafkaProducer<String, String> p = Support.stringProducer(broker, Map.of())) {
                RecordMetadata md = null;
                for (int i = 0; i < count; i++) {
                    md = p.send(new ProducerRecord<>(topic, 0, base + producer * 100 + i, "k", "v")).get();
                }
                lastTimestamps.put(count - 1, md.timestamp());
            }
        }
        PartitionProducerState state = admin.describeProducers(List.of(tp)).partitionResult(tp).get();
        List<ProducerState> active = state.activeProducers();
        assertEquals(2, active.size(), active.toString());
        assertNotEquals(active.get(0).producerId(), active.get(1).producerId());
        Map<Integer, ProducerState> bySequence = active.stream()
                .collect(Collectors.toMap(ProducerState::lastSequence, s -> s));
        assertEquals(Set.of(4, 11), bySequence.keySet(), "last sequences (5 and 12 records): " + active);
        for (ProducerState s : active) {
            assertTrue(s.producerId() >= 0, s.toString());
            assertEquals(0, s.producerEpoch(), s.toString());
            assertEquals(lastTimestamps.get(s.lastSequence()), s.lastTimestamp(), s.toString());
            assertTrue(s.currentTransactionStartOffset().isEmpty(), s.toString());
        }

        // A partition nobody wrote to has no producers. (An unknown topic is
        // no answer at all: the client retries its leader lookup until its
        // timeout, against Kafka as against Felice.)
        String quiet = Support.unique("admin-quiet");
        Support.createTopic(admin, quiet, 1);
        TopicPartition quietTp = new TopicPartition(quiet, 0);
        assertEquals(List.of(), admin.describeProducers(List.of(quietTp)).partitionResult(quietTp).get()
                .activeProducers());
    }
}
