package felice.jvm;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertNotEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;
import static org.junit.jupiter.api.Assumptions.assumeTrue;

import java.io.BufferedReader;
import java.io.IOException;
import java.io.InputStreamReader;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Duration;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import java.util.Properties;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.Future;
import java.util.concurrent.TimeUnit;
import org.apache.kafka.clients.admin.Admin;
import org.apache.kafka.clients.admin.AdminClientConfig;
import org.apache.kafka.clients.admin.NewTopic;
import org.apache.kafka.clients.admin.TopicDescription;
import org.apache.kafka.clients.consumer.ConsumerConfig;
import org.apache.kafka.clients.consumer.ConsumerRecord;
import org.apache.kafka.clients.consumer.KafkaConsumer;
import org.apache.kafka.clients.consumer.OffsetAndMetadata;
import org.apache.kafka.clients.producer.KafkaProducer;
import org.apache.kafka.clients.producer.ProducerConfig;
import org.apache.kafka.clients.producer.ProducerRecord;
import org.apache.kafka.clients.producer.RecordMetadata;
import org.apache.kafka.common.TopicPartition;
import org.apache.kafka.common.serialization.StringDeserializer;
import org.apache.kafka.common.serialization.StringSerializer;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.BeforeEach;
import org.junit.jupiter.api.Test;

/**
 * The Java client through kill -9 on a three-node cluster (`felice dev
 * cluster --nodes 3`, each node its own process), as a Kafka user would run
 * it: a replication-factor-3 topic with min.insync.replicas=2.
 * <ul>
 * <li>An idempotent acks=all producer keeps producing while the partition's
 * leader is killed; every send succeeds, and the partition holds every
 * record once, in order.</li>
 * <li>A consumer group keeps consuming and committing while its
 * coordinator's broker is killed; its committed offsets survive and it
 * reaches the end.</li>
 * </ul>
 * Each test gets its own cluster (a test kills one node of three).
 */
class ClusterFailoverTest {
    static final Duration START_TIMEOUT = Duration.ofSeconds(60);
    static final int RECORDS = 3000;

    Process cluster;
    Path dir;
    String bootstrap;
    Admin admin;

    @BeforeEach
    void startCluster() throws Exception {
        assumeTrue(System.getenv("FELICE_JVM_BOOTSTRAP") == null
                || System.getenv("FELICE_JVM_BOOTSTRAP").isEmpty(), "needs the felice binary");
        dir = Files.createTempDirectory("felice-jvm-failover-");
        cluster = new ProcessBuilder(FeliceBroker.binary().toString(), "dev", "cluster", "--nodes", "3",
                "--dir", dir.resolve("cluster").toString(), "--base-port",
                String.valueOf(ClusterToolsTest.freeBase()))
                .redirectError(dir.resolve("cluster.err").toFile())
                .start();
        BufferedReader out = new BufferedReader(new InputStreamReader(cluster.getInputStream(),
                StandardCharsets.UTF_8));
        CompletableFuture<String> first = CompletableFuture.supplyAsync(() -> {
            try {
                return out.readLine();
            } catch (IOException e) {
                return null;
            }
        });
        bootstrap = first.get(START_TIMEOUT.toSeconds(), TimeUnit.SECONDS);
        assertTrue(bootstrap != null && bootstrap.split(",").length == 3,
                "bootstrap list: " + bootstrap + "\n" + Files.readString(dir.resolve("cluster.err")));
        Properties p = new Properties();
        p.put(AdminClientConfig.BOOTSTRAP_SERVERS_CONFIG, bootstrap);
        admin = Admin.create(p);
    }

    @AfterEach
    void stopCluster() throws Exception {
        if (admin != null) {
            admin.close(Duration.ofSeconds(5));
        }
        if (cluster != null) {
            cluster.destroy();
            if (!cluster.waitFor(60, TimeUnit.SECONDS)) {
                cluster.destroyForcibly();
            }
        }
    }

    void kill9(int node) throws IOException {
        long pid = Long.parseLong(Files.readString(dir.resolve("cluster").resolve("node-" + node).resolve("pid"))
                .trim());
        ProcessHandle.of(pid).orElseThrow().destroyForcibly();
    }

    /** A replication-factor-3 topic of one partition with min.insync.replicas=2, its ISR full. */
    String replicatedTopic() {
        String topic = Support.unique("failover");
        try {
            admin.createTopics(List.of(new NewTopic(topic, 1, (short) 3)
                    .configs(Map.of("min.insync.replicas", "2")))).all().get();
        } catch (Exception e) {
            throw new AssertionError("createTopics: " + Support.causes(e), e);
        }
        Support.waitFor(Duration.ofSeconds(30), "three replicas in sync", () -> describe(topic),
                d -> d != null && d.partitions().get(0).isr().size() == 3 && d.partitions().get(0).leader() != null);
        return topic;
    }

    TopicDescription describe(String topic) {
        try {
            return admin.describeTopics(List.of(topic)).allTopicNames().get().get(topic);
        } catch (Exception e) {
            return null;
        }
    }

    KafkaProducer<String, String> producer() {
        Properties p = new Properties();
        p.put(ProducerConfig.BOOTSTRAP_SERVERS_CONFIG, bootstrap);
        p.put(ProducerConfig.KEY_SERIALIZER_CLASS_CONFIG, StringSerializer.class.getName());
        p.put(ProducerConfig.VALUE_SERIALIZER_CLASS_CONFIG, StringSerializer.class.getName());
        p.put(ProducerConfig.ACKS_CONFIG, "all");
        p.put(ProducerConfig.ENABLE_IDEMPOTENCE_CONFIG, "true");
        p.put(ProducerConfig.LINGER_MS_CONFIG, "2");
        return new KafkaProducer<>(p);
    }

    KafkaConsumer<String, String> consumer(String group) {
        Properties p = new Properties();
        p.put(ConsumerConfig.BOOTSTRAP_SERVERS_CONFIG, bootstrap);
        p.put(ConsumerConfig.KEY_DESERIALIZER_CLASS_CONFIG, StringDeserializer.class.getName());
        p.put(ConsumerConfig.VALUE_DESERIALIZER_CLASS_CONFIG, StringDeserializer.class.getName());
        p.put(ConsumerConfig.AUTO_OFFSET_RESET_CONFIG, "earliest");
        p.put(ConsumerConfig.ENABLE_AUTO_COMMIT_CONFIG, "false");
        p.put(ConsumerConfig.MAX_POLL_RECORDS_CONFIG, "100");
        if (group != null) {
            p.put(ConsumerConfig.GROUP_ID_CONFIG, group);
        }
        return new KafkaConsumer<>(p);
    }

    static String value(int i) {
        return String.format("r%06d", i);
    }

    /** Produces RECORDS records; `midway` runs once a third are acknowledged. */
    void produceAll(String topic, Runnable midway) throws Exception {
        try (KafkaProducer<String, String> producer = producer()) {
            List<Future<RecordMetadata>> sent = new ArrayList<>();
            boolean done = false;
            for (int i = 0; i < RECORDS; i++) {
                sent.add(producer.send(new ProducerRecord<>(topic, 0, null, value(i))));
                if (i % 100 == 99) {
                    sent.get(i).get(60, TimeUnit.SECONDS);
                }
                if (!done && i >= RECORDS / 3) {
                    // Up to 50 sends still in flight when the fault hits.
                    sent.get(i - 50).get(60, TimeUnit.SECONDS);
                    midway.run();
                    done = true;
                }
            }
            producer.flush();
            long previous = -1;
            for (Future<RecordMetadata> f : sent) {
                long offset = f.get(90, TimeUnit.SECONDS).offset();
                assertEquals(previous + 1, offset, "offsets in send order, none skipped");
                previous = offset;
            }
        }
    }

    List<String> readBack(String topic) {
        try (KafkaConsumer<String, String> c = consumer(null)) {
            TopicPartition tp = new TopicPartition(topic, 0);
            c.assign(List.of(tp));
            c.seekToBeginning(List.of(tp));
            List<String> out = new ArrayList<>();
            for (ConsumerRecord<String, String> r : Support.pollCount(c, RECORDS, Duration.ofSeconds(60))) {
                out.add(r.value());
            }
            return out;
        }
    }

    static List<String> expected() {
        List<String> out = new ArrayList<>();
        for (int i = 0; i < RECORDS; i++) {
            out.add(value(i));
        }
        return out;
    }

    @Test
    void idempotentProducerSurvivesTheLeadersKill9() throws Exception {
        String topic = replicatedTopic();
        int leader = describe(topic).partitions().get(0).leader().id();
        produceAll(topic, () -> {
            try {
                kill9(leader);
            } catch (IOException e) {
                throw new RuntimeException(e);
            }
        });
        // Each node learns the new leader on its own time: ask until one says.
        TopicDescription after = Support.waitFor(Duration.ofSeconds(30), "a new leader", () -> describe(topic),
                d -> d != null && d.partitions().get(0).leader() != null
                        && d.partitions().get(0).leader().id() != leader);
        assertNotEquals(leader, after.partitions().get(0).leader().id());
        assertEquals(expected(), readBack(topic));
    }

    @Test
    void consumerGroupSurvivesItsCoordinatorsKill9() throws Exception {
        String topic = replicatedTopic();
        produceAll(topic, () -> { });
        String group = Support.unique("failover-group");
        TopicPartition tp = new TopicPartition(topic, 0);
        List<String> seen = new ArrayList<>();
        long lastCommitted = -1;
        boolean killed = false;
        try (KafkaConsumer<String, String> c = consumer(group)) {
            c.subscribe(List.of(topic));
            long deadline = System.nanoTime() + Duration.ofSeconds(120).toNanos();
            while (lastCommitted < RECORDS) {
                assertTrue(System.nanoTime() < deadline, "the group stalled at " + lastCommitted);
                for (ConsumerRecord<String, String> r : c.poll(Duration.ofMillis(200))) {
                    seen.add(r.value());
                }
                if (!seen.isEmpty()) {
                    long position = c.position(tp);
                    c.commitSync(Map.of(tp, new OffsetAndMetadata(position)), Duration.ofSeconds(60));
                    lastCommitted = position;
                }
                if (!killed && lastCommitted >= RECORDS / 3) {
                    int coordinator = admin.describeConsumerGroups(List.of(group)).all().get().get(group)
                            .coordinator().id();
                    kill9(coordinator);
                    killed = true;
                }
            }
        }
        assertTrue(killed);
        // At least once: every record seen, in order; a redelivery after the
        // failover repeats a suffix, never skips.
        List<String> distinct = seen.stream().distinct().toList();
        assertEquals(expected(), distinct);
        Map<TopicPartition, OffsetAndMetadata> committed = admin.listConsumerGroupOffsets(group)
                .partitionsToOffsetAndMetadata().get();
        assertEquals(RECORDS, committed.get(tp).offset(), "committed offset survived the coordinator");
    }
}
