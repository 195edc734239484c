package felice.jvm;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Duration;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;
import java.util.Map;
import java.util.regex.Matcher;
import java.util.regex.Pattern;
import java.util.stream.Collectors;

import org.apache.kafka.clients.admin.Admin;
import org.apache.kafka.clients.consumer.ConsumerConfig;
import org.apache.kafka.clients.consumer.ConsumerRecord;
import org.apache.kafka.clients.consumer.KafkaConsumer;
import org.apache.kafka.clients.consumer.OffsetAndMetadata;
import org.apache.kafka.clients.producer.KafkaProducer;
import org.apache.kafka.clients.producer.ProducerRecord;
import org.apache.kafka.common.TopicPartition;
import org.apache.kafka.common.header.Header;
import org.junit.jupiter.api.AfterAll;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Tag;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

import felice.jvm.KafkaTool.Result;

/**
 * Apache Kafka's own command-line tools (4.1.1), each run as a subprocess
 * against Felice, with their output checked as an operator would read it.
 *
 * <p>Tests named recordedGap* pin down how a tool fails because Felice lacks
 * an API (the exact output): when the API lands, the test fails and must be
 * turned into the success assertion.
 */
class CliToolsTest {
    static FeliceBroker broker;
    static Admin admin;

    @BeforeAll
    static void startBroker() {
        broker = FeliceBroker.start("CliToolsTest");
        admin = Support.admin(broker);
        KafkaTool.classpath(); // resolve the jars before the first test's clock starts
    }

    @AfterAll
    static void stopBroker() throws Exception {
        Support.closeAll(admin, broker);
    }

    static String bs() {
        return broker.bootstrap();
    }

    static Result ok(Result r) {
        assertEquals(0, r.exitCode(), r.toString());
        return r;
    }

    // kafka-topics: --create (with a config), --list, --delete; creating an
    // existing topic fails with Kafka's message unless --if-not-exists; deleting
    // a missing topic fails.
    @Test
    void topicsCreateListDelete() {
        String topic = Support.unique("cli-topic");
        assertEquals("Created topic " + topic + ".\n", ok(KafkaTool.run(KafkaTool.TOPICS, "--bootstrap-server",
                bs(), "--create", "--topic", topic, "--partitions", "3", "--replication-factor", "1",
                "--config", "cleanup.policy=compact")).stdout());
        assertTrue(ok(KafkaTool.run(KafkaTool.TOPICS, "--bootstrap-server", bs(), "--list")).stdoutLines()
                .contains(topic));

        Result again = KafkaTool.run(KafkaTool.TOPICS, "--bootstrap-server", bs(), "--create", "--topic", topic,
                "--partitions", "3");
        assertEquals(1, again.exitCode(), again.toString());
        assertTrue(again.stdout().startsWith(
                "Error while executing topic command : Topic '" + topic + "' already exists.\n"), again.toString());
        // (Kafka's log4j2 configuration logs to standard output.)
        assertTrue(again.stdout().contains(
                "ERROR org.apache.kafka.common.errors.TopicExistsException: Topic '" + topic + "' already exists."),
                again.toString());
        ok(KafkaTool.run(KafkaTool.TOPICS, "--bootstrap-server", bs(), "--create", "--topic", topic,
                "--partitions", "3", "--if-not-exists"));

        ok(KafkaTool.run(KafkaTool.TOPICS, "--bootstrap-server", bs(), "--delete", "--topic", topic));
        Support.waitUntil(Duration.ofSeconds(30), topic + " gone from --list", () -> !ok(KafkaTool.run(
                KafkaTool.TOPICS, "--bootstrap-server", bs(), "--list")).stdoutLines().contains(topic));
        Result missing = KafkaTool.run(KafkaTool.TOPICS, "--bootstrap-server", bs(), "--delete", "--topic", topic);
        assertEquals(1, missing.exitCode(), missing.toString());
        assertTrue(missing.stdout().startsWith(
                "Error while executing topic command : Topic '" + topic + "' does not exist as expected\n"),
                missing.toString());
    }

    // kafka-topics --describe: the topic line (id, partition count,
    // replication factor, the configs that are not defaults, from
    // DescribeConfigs) and one line per partition, as with Kafka.
    @Test
    void topicsDescribe() {
        String topic = Support.unique("cli-describe");
        ok(KafkaTool.run(KafkaTool.TOPICS, "--bootstrap-server", bs(), "--create", "--topic", topic,
                "--partitions", "2", "--config", "retention.ms=1000"));
        Result r = ok(KafkaTool.run(KafkaTool.TOPICS, "--bootstrap-server", bs(), "--describe", "--topic", topic));
        List<String> lines = r.stdoutLines();
        assertEquals(3, lines.size(), r.toString());
        assertTrue(lines.get(0).matches("Topic: " + topic + "\tTopicId: \\S+\tPartitionCount: 2\t"
                + "ReplicationFactor: 1\tConfigs: retention.ms=1000"), r.toString());
        for (int p = 0; p < 2; p++) {
            assertTrue(lines.get(1 + p).matches("\tTopic: " + topic + "\tPartition: " + p
                    + "\tLeader: \\d+\tReplicas: \\d+\tIsr: \\d+.*"), r.toString());
        }
    }

    // kafka-topics --alter --partitions (CreatePartitions): the topic grows
    // to 4 partitions, and shrinking it is refused as Kafka refuses it.
    @Test
    void topicsAlterPartitions() {
        String topic = Support.unique("cli-grow");
        ok(KafkaTool.run(KafkaTool.TOPICS, "--bootstrap-server", bs(), "--create", "--topic", topic,
                "--partitions", "1"));
        ok(KafkaTool.run(KafkaTool.TOPICS, "--bootstrap-server", bs(), "--alter", "--topic", topic,
                "--partitions", "4"));
        Result d = ok(KafkaTool.run(KafkaTool.TOPICS, "--bootstrap-server", bs(), "--describe", "--topic", topic));
        assertTrue(d.stdoutLines().get(0).contains("\tPartitionCount: 4\t"), d.toString());
        assertEquals(5, d.stdoutLines().size(), d.toString());
        Result shrink = KafkaTool.run(KafkaTool.TOPICS, "--bootstrap-server", bs(), "--alter", "--topic", topic,
                "--partitions", "2");
        assertEquals(1, shrink.exitCode(), shrink.toString());
        assertTrue(shrink.stdout().contains("InvalidPartitionsException"), shrink.toString());
    }

    // kafka-console-producer with parse.key and parse.headers (headers first,
    // then key, then value, tab-separated; a header key may repeat), and
    // kafka-console-consumer printing them back with print.key, print.headers,
    // print.partition, print.offset and print.timestamp. A Java consumer
    // confirms what the console producer actually wrote.
    @Test
    void consoleProducerAndConsumerWithKeysAndHeaders() throws Exception {
        String topic = Support.unique("cli-console");
        Support.createTopic(admin, topic, 1);
        String input = "h1:v1,h2:v2\tk1\tvalue one\n"
                + "hop:a,hop:b\tk2\tvalue two\n"
                + "solo:\tk3\tvalue three\n";
        ok(KafkaTool.run(Duration.ofSeconds(60), input, KafkaTool.CONSOLE_PRODUCER, "--bootstrap-server", bs(),
                "--topic", topic, "--property", "parse.key=true", "--property", "parse.headers=true"));

        Result r = ok(KafkaTool.run(KafkaTool.CONSOLE_CONSUMER, "--bootstrap-server", bs(), "--topic", topic,
                "--from-beginning", "--max-messages", "3", "--timeout-ms", "30000",
                "--property", "print.key=true", "--property", "print.headers=true",
                "--property", "print.partition=true", "--property", "print.offset=true",
                "--property", "print.timestamp=true"));
        List<String> lines = r.stdoutLines();
        assertEquals(3, lines.size(), r.toString());
        Pattern line = Pattern.compile("CreateTime:(\\d+)\tPartition:0\tOffset:(\\d)\t(.*)");
        String[] expected = {"h1:v1,h2:v2\tk1\tvalue one", "hop:a,hop:b\tk2\tvalue two", "solo:\tk3\tvalue three"};
        long now = System.currentTimeMillis();
        for (int i = 0; i < 3; i++) {
            Matcher m = line.matcher(lines.get(i));
            assertTrue(m.matches(), "line " + i + ": " + lines.get(i));
            assertEquals(String.valueOf(i), m.group(2));
            assertEquals(expected[i], m.group(3));
            long ts = Long.parseLong(m.group(1));
            assertTrue(Math.abs(now - ts) < 300_000, "CreateTime set by the producer, recent: " + ts);
        }
        assertTrue(r.stderr().contains("Processed a total of 3 messages"), r.toString());

        try (KafkaConsumer<String, String> c = Support.stringConsumer(broker, Map.of())) {
            TopicPartition tp = new TopicPartition(topic, 0);
            c.assign(List.of(tp));
            c.seekToBeginning(List.of(tp));
            List<ConsumerRecord<String, String>> got = Support.pollCount(c, 3, Duration.ofSeconds(30));
            assertEquals("k2", got.get(1).key());
            assertEquals("value two", got.get(1).value());
            List<String> hop = new ArrayList<>();
            for (Header h : got.get(1).headers().headers("hop")) {
                hop.add(new String(h.value(), StandardCharsets.UTF_8));
            }
            assertEquals(List.of("a", "b"), hop, "a repeated header key keeps both values in order");
            assertEquals("", new String(got.get(2).headers().lastHeader("solo").value(), StandardCharsets.UTF_8));
        }
    }

    // kafka-consumer-groups against a live classic group and then an empty
    // one: --list, --describe (offsets, log end, lag, member), --describe
    // --state and --members, --reset-offsets refused while the group is
    // active, then --reset-offsets --to-earliest --execute, --delete-offsets
    // and --delete.
    @Test
    void consumerGroupsListDescribeResetDelete() throws Exception {
        String topic = Support.unique("cli-groups");
        String group = Support.unique("cli-g");
        Support.createTopic(admin, topic, 1);
        try (KafkaProducer<String, String> p = Support.stringProducer(broker, Map.of())) {
            for (int i = 0; i < 10; i++) {
                p.send(new ProducerRecord<>(topic, 0, "k" + i, "v" + i)).get();
            }
        }
        TopicPartition tp = new TopicPartition(topic, 0);
        try (KafkaConsumer<String, String> c = Support.stringConsumer(broker, Map.of(
                ConsumerConfig.GROUP_ID_CONFIG, group,
                ConsumerConfig.CLIENT_ID_CONFIG, "cli-groups-client",
                ConsumerConfig.PARTITION_ASSIGNMENT_STRATEGY_CONFIG,
                org.apache.kafka.clients.consumer.RangeAssignor.class.getName()))) {
            c.subscribe(List.of(topic));
            Support.waitUntil(Duration.ofSeconds(30), "assignment", () -> {
                c.poll(Duration.ofMillis(100));
                return c.assignment().contains(tp);
            });
            c.commitSync(Map.of(tp, new OffsetAndMetadata(4)));

            assertTrue(ok(KafkaTool.run(KafkaTool.CONSUMER_GROUPS, "--bootstrap-server", bs(), "--list"))
                    .stdoutLines().contains(group));

            // GROUP TOPIC PARTITION CURRENT-OFFSET LOG-END-OFFSET LAG CONSUMER-ID HOST CLIENT-ID
            Result d = ok(KafkaTool.run(KafkaTool.CONSUMER_GROUPS, "--bootstrap-server", bs(), "--describe",
                    "--group", group));
            List<String> row = row(d, group);
            assertEquals(List.of(group, topic, "0", "4", "10", "6"), row.subList(0, 6), d.toString());
            assertTrue(row.get(6).startsWith("cli-groups-client-"), "consumer id: " + row);
            assertEquals("/127.0.0.1", row.get(7));
            assertEquals("cli-groups-client", row.get(8));

            // GROUP COORDINATOR (ID) ASSIGNMENT-STRATEGY STATE #MEMBERS
            Result s = ok(KafkaTool.run(KafkaTool.CONSUMER_GROUPS, "--bootstrap-server", bs(), "--describe",
                    "--group", group, "--state"));
            List<String> state = row(s, group);
            if (broker.isExternal()) {
                // On a cluster the coordinator is whichever broker leads the
                // group's __consumer_offsets partition.
                assertTrue(state.get(1).matches("127\\.0\\.0\\.1:\\d+") && state.get(2).matches("\\(\\d+\\)"),
                        s.toString());
                assertEquals(List.of(group, "range", "Stable", "1"),
                        List.of(state.get(0), state.get(3), state.get(4), state.get(5)), s.toString());
            } else {
                assertEquals(List.of(group, bs(), "(1)", "range", "Stable", "1"), state, s.toString());
            }

            // GROUP CONSUMER-ID HOST CLIENT-ID #PARTITIONS
            Result m = ok(KafkaTool.run(KafkaTool.CONSUMER_GROUPS, "--bootstrap-server", bs(), "--describe",
                    "--group", group, "--members"));
            List<String> member = row(m, group);
            assertEquals(List.of("/127.0.0.1", "cli-groups-client", "1"), member.subList(2, 5), m.toString());

            Result refused = KafkaTool.run(KafkaTool.CONSUMER_GROUPS, "--bootstrap-server", bs(),
                    "--reset-offsets", "--to-earliest", "--group", group, "--topic", topic, "--execute");
            assertTrue(refused.stdout().contains("Assignments can only be reset if the group '" + group
                    + "' is inactive, but the current state is Stable."), refused.toString());
        }

        Result reset = ok(KafkaTool.run(KafkaTool.CONSUMER_GROUPS, "--bootstrap-server", bs(),
                "--reset-offsets", "--to-earliest", "--group", group, "--topic", topic, "--execute"));
        assertEquals(List.of(group, topic, "0", "0"), row(reset, group), reset.toString());
        assertEquals(0L, admin.listConsumerGroupOffsets(group).partitionsToOffsetAndMetadata().get().get(tp).offset());

        Result after = ok(KafkaTool.run(KafkaTool.CONSUMER_GROUPS, "--bootstrap-server", bs(), "--describe",
                "--group", group));
        assertTrue(after.stderr().contains("Consumer group '" + group + "' has no active members."), after.toString());
        assertEquals(List.of(group, topic, "0", "0", "10", "10", "-", "-", "-"), row(after, group), after.toString());

        // --delete-offsets (OffsetDelete) for the empty group's one partition.
        Result delOffsets = ok(KafkaTool.run(KafkaTool.CONSUMER_GROUPS, "--bootstrap-server", bs(),
                "--delete-offsets", "--group", group, "--topic", topic + ":0"));
        assertTrue(delOffsets.stdout().startsWith("Request succeeded for deleting offsets from group " + group
                + ".\n"), delOffsets.toString());
        assertEquals(List.of(topic, "0", "Successful"), row(delOffsets, topic), delOffsets.toString());
        assertTrue(admin.listConsumerGroupOffsets(group).partitionsToOffsetAndMetadata().get().isEmpty());

        Result del = ok(KafkaTool.run(KafkaTool.CONSUMER_GROUPS, "--bootstrap-server", bs(), "--delete",
                "--group", group));
        assertEquals("Deletion of requested consumer groups ('" + group + "') was successful.\n", del.stdout());
        assertFalse(ok(KafkaTool.run(KafkaTool.CONSUMER_GROUPS, "--bootstrap-server", bs(), "--list"))
                .stdoutLines().contains(group));
    }

    /** The whitespace-separated cells of the one output line that starts with `first`. */
    private static List<String> row(Result r, String first) {
        List<String> rows = r.stdoutLines().stream().filter(l -> l.startsWith(first + " "))
                .collect(Collectors.toList());
        assertEquals(1, rows.size(), "one row for " + first + ": " + r);
        return Arrays.asList(rows.get(0).trim().split("\\s+"));
    }

    // kafka-configs --describe (DescribeConfigs): a topic's overrides with
    // their synonyms, and a broker's whole configuration with --all.
    @Test
    void configsDescribe() {
        String topic = Support.unique("cli-configs");
        ok(KafkaTool.run(KafkaTool.TOPICS, "--bootstrap-server", bs(), "--create", "--topic", topic,
                "--partitions", "1", "--config", "retention.ms=1000"));
        Result r = ok(KafkaTool.run(KafkaTool.CONFIGS, "--bootstrap-server", bs(), "--describe",
                "--entity-type", "topics", "--entity-name", topic));
        assertEquals("Dynamic configs for topic " + topic + " are:\n"
                + "  retention.ms=1000 sensitive=false synonyms={DYNAMIC_TOPIC_CONFIG:retention.ms=1000}\n", r.stdout());

        Result none = ok(KafkaTool.run(KafkaTool.CONFIGS, "--bootstrap-server", bs(), "--describe",
                "--entity-type", "brokers", "--entity-name", "1"));
        assertEquals("Dynamic configs for broker 1 are:\n", none.stdout());
        Result all = ok(KafkaTool.run(KafkaTool.CONFIGS, "--bootstrap-server", bs(), "--describe",
                "--entity-type", "brokers", "--entity-name", "1", "--all"));
        assertTrue(all.stdout().startsWith("All configs for broker 1 are:\n"), all.toString());
        assertTrue(all.stdoutLines().contains(
                "  log.retention.hours=168 sensitive=false synonyms={DEFAULT_CONFIG:log.retention.hours=168}"),
                all.toString());
    }

    // kafka-configs --alter (IncrementalAlterConfigs): --add-config sets,
    // --delete-config removes, and --describe shows the result; an unknown
    // key is refused.
    @Test
    void configsAlter() {
        String topic = Support.unique("cli-alter");
        Support.createTopic(admin, topic, 1);
        Result r = ok(KafkaTool.run(KafkaTool.CONFIGS, "--bootstrap-server", bs(), "--alter",
                "--entity-type", "topics", "--entity-name", topic, "--add-config",
                "retention.ms=60000,max.message.bytes=2000000"));
        assertEquals("Completed updating config for topic " + topic + ".\n", r.stdout());
        ok(KafkaTool.run(KafkaTool.CONFIGS, "--bootstrap-server", bs(), "--alter",
                "--entity-type", "topics", "--entity-name", topic, "--delete-config", "max.message.bytes"));
        Result d = ok(KafkaTool.run(KafkaTool.CONFIGS, "--bootstrap-server", bs(), "--describe",
                "--entity-type", "topics", "--entity-name", topic));
        assertEquals("Dynamic configs for topic " + topic + " are:\n"
                + "  retention.ms=60000 sensitive=false synonyms={DYNAMIC_TOPIC_CONFIG:retention.ms=60000}\n",
                d.stdout());
        Result bad = KafkaTool.run(KafkaTool.CONFIGS, "--bootstrap-server", bs(), "--alter",
                "--entity-type", "topics", "--entity-name", topic, "--add-config", "no.such.config=1");
        assertEquals(1, bad.exitCode(), bad.toString());
    }

    // Recorded gap: kafka-delete-records needs DeleteRecords (API 21). The tool
    // exits 0 and reports the error per partition. With Kafka it prints
    // "partition: T-0\tlow_watermark: 2".
    @Test
    void recordedGapDeleteRecords(@TempDir Path dir) throws Exception {
        String topic = Support.unique("cli-delrec");
        Support.createTopic(admin, topic, 1);
        try (KafkaProducer<String, String> p = Support.stringProducer(broker, Map.of())) {
            for (int i = 0; i < 3; i++) {
                p.send(new ProducerRecord<>(topic, 0, "k", "v" + i)).get();
            }
        }
        Path json = dir.resolve("offsets.json");
        Files.writeString(json, "{\"partitions\":[{\"topic\":\"" + topic + "\",\"partition\":0,\"offset\":2}],"
                + "\"version\":1}");
        Result r = ok(KafkaTool.run(KafkaTool.DELETE_RECORDS, "--bootstrap-server", bs(), "--offset-json-file",
                json.toString()));
        assertEquals("Executing records delete operation\n"
                + "Records delete operation completed:\n"
                + "partition: " + topic + "-0\terror: org.apache.kafka.common.errors.UnsupportedVersionException: "
                + "The node does not support DELETE_RECORDS\n", r.stdout());
    }

    // Recorded gap: transactions. A transactional producer (the producer perf
    // tool with --transactional-id) looks up its transaction coordinator with
    // FindCoordinator key type 1, which Felice answers with INVALID_REQUEST and
    // a message; the producer fails at once (fatal). kafka-transactions list
    // needs ListTransactions (API 66). kafka-transactions describe-producers
    // (DescribeProducers) works and is checked here too.
    @Test
    void recordedGapTransactions() throws Exception {
        String topic = Support.unique("cli-txn");
        Support.createTopic(admin, topic, 1);
        Result p = KafkaTool.run(KafkaTool.PRODUCER_PERF, "--topic", topic, "--num-records", "10",
                "--record-size", "10", "--throughput", "-1", "--transactional-id", "felice-txn",
                "--producer-props", "bootstrap.servers=" + bs(), "max.block.ms=10000");
        assertEquals(1, p.exitCode(), p.toString());
        assertTrue(p.stderr().startsWith("Exception in thread \"main\" org.apache.kafka.common.KafkaException: "
                + "Could not find a coordinator with type TRANSACTION with key felice-txn due to unexpected error: "
                + "key type 1 is not supported (only consumer groups, 0)\n"), p.toString());

        Result list = KafkaTool.run(KafkaTool.TRANSACTIONS, "--bootstrap-server", bs(), "list");
        assertEquals(1, list.exitCode(), list.toString());
        assertEquals("Failed to list transactions: The node does not support LIST_TRANSACTIONS. "
                + "Enable debug logging for additional detail.\n", list.stderr());

        // What works: the idempotent producers of a partition.
        try (KafkaProducer<String, String> producer = Support.stringProducer(broker, Map.of())) {
            for (int i = 0; i < 3; i++) {
                producer.send(new ProducerRecord<>(topic, 0, "k", "v" + i)).get();
            }
        }
        Result dp = ok(KafkaTool.run(KafkaTool.TRANSACTIONS, "--bootstrap-server", bs(), "describe-producers",
                "--topic", topic, "--partition", "0"));
        List<String> lines = dp.stdoutLines();
        assertEquals(2, lines.size(), dp.toString());
        assertEquals(List.of("ProducerId", "ProducerEpoch", "LatestCoordinatorEpoch", "LastSequence",
                "LastTimestamp", "CurrentTransactionStartOffset"), Arrays.asList(lines.get(0).trim().split("\\s+")));
        List<String> cells = Arrays.asList(lines.get(1).trim().split("\\s+"));
        assertEquals(List.of("0", "-1", "2"), cells.subList(1, 4), dp.toString());
        assertEquals("None", cells.get(5));
    }

    // kafka-get-offsets: latest (-1, the default), earliest (-2) and by
    // timestamp, one "topic:partition:offset" line per partition.
    @Test
    void getOffsets() throws Exception {
        String topic = Support.unique("cli-offsets");
        Support.createTopic(admin, topic, 2);
        long t0 = System.currentTimeMillis() - 100_000;
        try (KafkaProducer<String, String> p = Support.stringProducer(broker, Map.of())) {
            for (int i = 0; i < 5; i++) {
                p.send(new ProducerRecord<>(topic, 0, t0 + i * 1000L, "k", "v" + i)).get();
            }
            p.send(new ProducerRecord<>(topic, 1, t0, "k", "only")).get();
        }
        assertEquals(List.of(topic + ":0:5", topic + ":1:1"), sorted(ok(KafkaTool.run(KafkaTool.GET_OFFSETS,
                "--bootstrap-server", bs(), "--topic", topic)).stdoutLines()));
        assertEquals(List.of(topic + ":0:0", topic + ":1:0"), sorted(ok(KafkaTool.run(KafkaTool.GET_OFFSETS,
                "--bootstrap-server", bs(), "--topic", topic, "--time", "-2")).stdoutLines()));
        // Offset 3 is the first record at or after t0+2500 on partition 0;
        // partition 1 has none, so the tool prints no line for it.
        assertEquals(List.of(topic + ":0:3"), sorted(ok(KafkaTool.run(KafkaTool.GET_OFFSETS,
                "--bootstrap-server", bs(), "--topic", topic, "--time", String.valueOf(t0 + 2500))).stdoutLines()));
    }

    // kafka-broker-api-versions: the bootstrap node (among the others, on a
    // cluster), and every API Felice implements reported as usable at the
    // version range Felice advertises.
    @Test
    void brokerApiVersions() {
        Result r = ok(KafkaTool.run(KafkaTool.BROKER_API_VERSIONS, "--bootstrap-server", bs()));
        String out = r.stdout();
        assertTrue(Pattern.compile("(?m)^127\\.0\\.0\\.1:" + broker.port()
                + " \\(id: \\d+ rack: null isFenced: false\\) -> \\($").matcher(out).find(), out);
        for (String api : List.of("Produce(0)", "Fetch(1)", "ListOffsets(2)", "Metadata(3)", "OffsetCommit(8)",
                "OffsetFetch(9)", "FindCoordinator(10)", "JoinGroup(11)", "Heartbeat(12)", "LeaveGroup(13)",
                "SyncGroup(14)", "DescribeGroups(15)", "ListGroups(16)", "ApiVersions(18)", "CreateTopics(19)",
                "DeleteTopics(20)", "InitProducerId(22)", "DeleteGroups(42)", "OffsetDelete(47)",
                "DescribeCluster(60)", "DescribeProducers(61)", "DescribeConfigs(32)", "CreatePartitions(37)",
                "AlterConfigs(33)", "IncrementalAlterConfigs(44)")) {
            Pattern usable = Pattern.compile("\t" + Pattern.quote(api) + ": (\\d+ to )?\\d+ \\[usable: \\d+\\],?\n");
            assertTrue(usable.matcher(out).find(), api + " usable in:\n" + out);
        }
    }

    // Recorded gaps as kafka-broker-api-versions shows them: the APIs whose
    // absence the other recordedGap* tests pin down, reported UNSUPPORTED.
    @Test
    void recordedGapApiVersionsUnsupported() {
        String out = ok(KafkaTool.run(KafkaTool.BROKER_API_VERSIONS, "--bootstrap-server", bs())).stdout();
        for (String api : List.of("DeleteRecords(21)", "AddPartitionsToTxn(24)", "EndTxn(26)",
                "ListTransactions(66)", "ConsumerGroupHeartbeat(68)", "DescribeTopicPartitions(75)")) {
            assertTrue(out.contains("\t" + api + ": UNSUPPORTED"), api + " UNSUPPORTED in:\n" + out);
        }
    }

    // kafka-producer-perf-test (20,000 records of 100 bytes, acks=all) then
    // kafka-consumer-perf-test reading them all back in a group.
    @Test
    @Tag("slow")
    void producerAndConsumerPerfTests() throws Exception {
        String topic = Support.unique("cli-perf");
        Support.createTopic(admin, topic, 2);
        Result p = ok(KafkaTool.run(Duration.ofSeconds(120), null, KafkaTool.PRODUCER_PERF, "--topic", topic,
                "--num-records", "20000", "--record-size", "100", "--throughput", "-1",
                "--producer-props", "bootstrap.servers=" + bs(), "acks=all"));
        assertTrue(Pattern.compile("(?m)^20000 records sent, [0-9.]+ records/sec").matcher(p.stdout()).find(),
                p.toString());
        long total = admin.listOffsets(Map.of(
                new TopicPartition(topic, 0), org.apache.kafka.clients.admin.OffsetSpec.latest(),
                new TopicPartition(topic, 1), org.apache.kafka.clients.admin.OffsetSpec.latest()))
                .all().get().values().stream().mapToLong(i -> i.offset()).sum();
        assertEquals(20000, total, "records in the topic");

        Result c = ok(KafkaTool.run(Duration.ofSeconds(120), null, KafkaTool.CONSUMER_PERF, "--bootstrap-server",
                bs(), "--topic", topic, "--messages", "20000", "--timeout", "60000", "--group",
                Support.unique("perf-g")));
        List<String> lines = c.stdoutLines();
        assertEquals(2, lines.size(), c.toString());
        assertTrue(lines.get(0).startsWith("start.time, end.time, data.consumed.in.MB, MB.sec, "
                + "data.consumed.in.nMsg,"), c.toString());
        String[] cells = lines.get(1).split(",\\s*");
        assertEquals("20000", cells[4], "data.consumed.in.nMsg: " + lines.get(1));
        assertEquals(1.9073, Double.parseDouble(cells[2]), 0.0001, "data.consumed.in.MB (20000 x 100 B)");
    }

    private static List<String> sorted(List<String> l) {
        List<String> s = new ArrayList<>(l);
        s.sort(null);
        return s;
    }
}
