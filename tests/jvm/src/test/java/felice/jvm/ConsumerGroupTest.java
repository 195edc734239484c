package felice.jvm;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.time.Duration;
import java.util.ArrayList;
import java.util.Collections;
import java.util.HashMap;
import java.util.HashSet;
import java.util.List;
import java.util.Map;
import java.util.Set;
import java.util.TreeMap;
import java.util.concurrent.atomic.AtomicBoolean;
import java.util.concurrent.atomic.AtomicReference;
import java.util.stream.Collectors;

import org.apache.kafka.clients.admin.Admin;
import org.apache.kafka.clients.consumer.ConsumerConfig;
import org.apache.kafka.clients.consumer.ConsumerRecord;
import org.apache.kafka.clients.consumer.CooperativeStickyAssignor;
import org.apache.kafka.clients.consumer.KafkaConsumer;
import org.apache.kafka.clients.consumer.OffsetAndMetadata;
import org.apache.kafka.clients.consumer.RangeAssignor;
import org.apache.kafka.clients.consumer.RoundRobinAssignor;
import org.apache.kafka.clients.consumer.StickyAssignor;
import org.apache.kafka.clients.producer.KafkaProducer;
import org.apache.kafka.clients.producer.ProducerRecord;
import org.apache.kafka.common.TopicPartition;
import org.junit.jupiter.api.AfterAll;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.ValueSource;

/**
 * Consumer groups through the Java consumer's classic protocol, once per
 * assignor (partition.assignment.strategy): range, roundrobin, sticky and
 * cooperative-sticky (the last rebalances in two rounds). Two members share a
 * six-partition topic: each record is consumed exactly once, by the member that
 * owns its partition. Then what the group committed survives the members
 * (a new instance resumes at the commits) and a broker restart.
 */
class ConsumerGroupTest {
    static final int PARTITIONS = 6;
    static final Duration WAIT = Duration.ofSeconds(60);

    static FeliceBroker broker;
    static Admin admin;

    @BeforeAll
    static void startBroker() {
        broker = FeliceBroker.start("ConsumerGroupTest");
        admin = Support.admin(broker);
    }

    @AfterAll
    static void stopBroker() throws Exception {
        Support.closeAll(admin, broker);
    }

    /** A group member polling on its own thread (KafkaConsumer is single-threaded). */
    static final class Member implements AutoCloseable {
        final String name;
        final AtomicReference<Set<TopicPartition>> assignment = new AtomicReference<>(Set.of());
        final List<ConsumerRecord<String, String>> records = Collections.synchronizedList(new ArrayList<>());
        final AtomicReference<Throwable> failure = new AtomicReference<>();
        final AtomicBoolean stop = new AtomicBoolean();
        final Thread thread;

        Member(String name, String group, String topic, String assignor) {
            this.name = name;
            Map<String, Object> cfg = new HashMap<>();
            cfg.put(ConsumerConfig.GROUP_ID_CONFIG, group);
            cfg.put(ConsumerConfig.CLIENT_ID_CONFIG, name);
            cfg.put(ConsumerConfig.PARTITION_ASSIGNMENT_STRATEGY_CONFIG, assignor);
            // A member notices a rebalance on its next heartbeat: keep that short.
            cfg.put(ConsumerConfig.HEARTBEAT_INTERVAL_MS_CONFIG, "500");
            cfg.put(ConsumerConfig.SESSION_TIMEOUT_MS_CONFIG, "10000");
            thread = new Thread(() -> {
                try (KafkaConsumer<String, String> c = Support.stringConsumer(broker, cfg)) {
                    c.subscribe(List.of(topic));
                    while (!stop.get()) {
                        var batch = c.poll(Duration.ofMillis(100));
                        batch.forEach(records::add);
                        assignment.set(Set.copyOf(c.assignment()));
                        if (!batch.isEmpty()) {
                            c.commitSync();
                        }
                    }
                } catch (Throwable t) {
                    failure.set(t);
                }
            }, name);
            thread.setDaemon(true);
            thread.start();
        }

        /** The assignment after the member's last poll; a member whose thread failed fails the test. */
        Set<TopicPartition> assignment() {
            if (failure.get() != null) {
                throw new AssertionError(name + " failed: " + failure.get(), failure.get());
            }
            return assignment.get();
        }

        @Override
        public void close() throws InterruptedException {
            stop.set(true);
            thread.join(30_000);
            if (thread.isAlive()) {
                throw new AssertionError(name + " did not stop within 30 s");
            }
            if (failure.get() != null) {
                throw new AssertionError(name + " failed: " + failure.get(), failure.get());
            }
        }
    }

    // One assignor per run (the Java client names them by class; range,
    // roundrobin, sticky and cooperative-sticky are the names librdkafka uses).
    // The broker only relays the leader's assignment, but each assignor drives
    // JoinGroup/SyncGroup differently (cooperative-sticky revokes in a second
    // round), and commits must survive members and broker restarts alike.
    @ParameterizedTest(name = "partition.assignment.strategy={0}")
    @ValueSource(classes = {RangeAssignor.class, RoundRobinAssignor.class, StickyAssignor.class,
            CooperativeStickyAssignor.class})
    void twoMembersShareTopicAndResumeAtCommits(Class<?> assignorClass) throws Exception {
        String assignor = assignorClass.getName();
        String tag = assignorClass.getSimpleName().replace("Assignor", "").toLowerCase();
        String topic = Support.unique("group-" + tag);
        String group = Support.unique("g-" + tag);
        Support.createTopic(admin, topic, PARTITIONS);
        Set<TopicPartition> all = new HashSet<>();
        for (int p = 0; p < PARTITIONS; p++) {
            all.add(new TopicPartition(topic, p));
        }

        // Phase 1: two members; the group is stable once their assignments are
        // disjoint, non-empty and cover the topic. Only then are records
        // produced, so no rebalance can hand a record to both.
        Map<Integer, Long> produced;
        try (Member a = new Member("a-" + tag, group, topic, assignor);
             Member b = new Member("b-" + tag, group, topic, assignor)) {
            Support.waitFor(WAIT, "both members assigned (" + tag + ")",
                    () -> List.of(a.assignment(), b.assignment()),
                    l -> !l.get(0).isEmpty() && !l.get(1).isEmpty()
                            && Collections.disjoint(l.get(0), l.get(1))
                            && union(l.get(0), l.get(1)).equals(all));
            Set<TopicPartition> ownedByA = a.assignment();
            Set<TopicPartition> ownedByB = b.assignment();
            assertEquals(3, ownedByA.size(), assignor + " balances 6 partitions over 2 members: " + ownedByA);

            produced = produce(topic, 50, "p1");
            int total = 50 * PARTITIONS;
            Support.waitFor(WAIT, "all " + total + " records consumed",
                    () -> {
                        a.assignment(); // fails the wait at once if a member failed
                        b.assignment();
                        return a.records.size() + b.records.size();
                    }, n -> n >= total);

            Set<String> seen = new HashSet<>();
            for (Member m : List.of(a, b)) {
                Set<TopicPartition> owned = m == a ? ownedByA : ownedByB;
                synchronized (m.records) {
                    for (ConsumerRecord<String, String> r : m.records) {
                        TopicPartition tp = new TopicPartition(r.topic(), r.partition());
                        assertTrue(owned.contains(tp), m.name + " consumed " + tp + " which it does not own");
                        assertTrue(seen.add(tp + "@" + r.offset()), "consumed twice: " + tp + "@" + r.offset());
                    }
                }
            }
            assertEquals(total, seen.size(), "every record exactly once");
            // Each member commits after each poll; the group's commits reach the end.
            Support.waitFor(WAIT, "commits at the end of every partition", () -> committed(group, topic),
                    c -> c.equals(produced));
        }

        // Phase 2: a new instance resumes exactly at the commits, then commits
        // half of what it read by hand (commitSync with explicit offsets).
        Map<Integer, Long> produced2 = produce(topic, 20, "p2");
        Map<TopicPartition, OffsetAndMetadata> half = new HashMap<>();
        try (KafkaConsumer<String, String> c = Support.stringConsumer(broker, Map.of(
                ConsumerConfig.GROUP_ID_CONFIG, group,
                ConsumerConfig.PARTITION_ASSIGNMENT_STRATEGY_CONFIG, assignor))) {
            c.subscribe(List.of(topic));
            List<ConsumerRecord<String, String>> got = Support.pollCount(c, 20 * PARTITIONS, WAIT);
            assertEquals(20 * PARTITIONS, got.size(), "only the new records");
            Map<Integer, Long> first = firstOffsets(got);
            assertEquals(constant(50L), first, "resumed at the committed offsets");
            assertTrue(got.stream().allMatch(r -> r.value().startsWith("p2-")), "no old record again");
            for (int p = 0; p < PARTITIONS; p++) {
                half.put(new TopicPartition(topic, p), new OffsetAndMetadata(60L, "half-" + p));
            }
            c.commitSync(half);
        }
        assertEquals(constant(70L), produced2);

        // Phase 3: the broker restarts between the commit and the resume.
        broker.restart();
        try (KafkaConsumer<String, String> c = Support.stringConsumer(broker, Map.of(
                ConsumerConfig.GROUP_ID_CONFIG, group,
                ConsumerConfig.PARTITION_ASSIGNMENT_STRATEGY_CONFIG, assignor))) {
            c.subscribe(List.of(topic));
            List<ConsumerRecord<String, String>> got = Support.pollCount(c, 10 * PARTITIONS, WAIT);
            assertEquals(constant(60L), firstOffsets(got), "resumed at the commits after a broker restart");
            Map<Integer, Long> counts = got.stream().collect(Collectors.groupingBy(
                    ConsumerRecord::partition, TreeMap::new, Collectors.counting()));
            assertEquals(constant(10L), counts, "offsets 60..69 of each partition");
            // The commit metadata survived too.
            Map<TopicPartition, OffsetAndMetadata> after = c.committed(new HashSet<>(half.keySet()));
            for (var e : half.entrySet()) {
                assertEquals(e.getValue().offset(), after.get(e.getKey()).offset());
                assertEquals(e.getValue().metadata(), after.get(e.getKey()).metadata());
            }
            // And the consumer stands at the end of every partition.
            for (TopicPartition tp : half.keySet()) {
                assertEquals(70L, c.position(tp), "position of " + tp);
            }
        }
    }

    /** Produces n records to each partition; returns the end offset per partition. */
    private Map<Integer, Long> produce(String topic, int perPartition, String tag) throws Exception {
        Map<Integer, Long> end = new TreeMap<>();
        try (KafkaProducer<String, String> p = Support.stringProducer(broker, Map.of())) {
            for (int part = 0; part < PARTITIONS; part++) {
                for (int i = 0; i < perPartition; i++) {
                    var md = p.send(new ProducerRecord<>(topic, part, "k" + i, tag + "-" + part + "-" + i)).get();
                    end.put(part, md.offset() + 1);
                }
            }
        }
        return end;
    }

    private Map<Integer, Long> committed(String group, String topic) {
        try {
            Map<Integer, Long> out = new TreeMap<>();
            admin.listConsumerGroupOffsets(group).partitionsToOffsetAndMetadata().get().forEach((tp, om) -> {
                if (tp.topic().equals(topic) && om != null) {
                    out.put(tp.partition(), om.offset());
                }
            });
            return out;
        } catch (Exception e) {
            throw new AssertionError(e);
        }
    }

    private static Map<Integer, Long> firstOffsets(List<ConsumerRecord<String, String>> records) {
        Map<Integer, Long> first = new TreeMap<>();
        for (ConsumerRecord<String, String> r : records) {
            first.merge(r.partition(), r.offset(), Math::min);
        }
        return first;
    }

    private static Map<Integer, Long> constant(long v) {
        Map<Integer, Long> m = new TreeMap<>();
        for (int p = 0; p < PARTITIONS; p++) {
            m.put(p, v);
        }
        return m;
    }

    private static Set<TopicPartition> union(Set<TopicPartition> a, Set<TopicPartition> b) {
        Set<TopicPartition> u = new HashSet<>(a);
        u.addAll(b);
        return u;
    }
}
