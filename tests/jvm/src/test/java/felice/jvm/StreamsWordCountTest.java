package felice.jvm;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Duration;
import java.util.Arrays;
import java.util.HashMap;
import java.util.List;
import java.util.Locale;
import java.util.Map;
import java.util.Properties;
import java.util.Set;
import java.util.TreeMap;
import java.util.concurrent.atomic.AtomicLong;
import java.util.concurrent.atomic.AtomicReference;

import org.apache.kafka.clients.admin.Admin;
import org.apache.kafka.clients.admin.TopicDescription;
import org.apache.kafka.clients.consumer.ConsumerConfig;
import org.apache.kafka.clients.consumer.ConsumerRecord;
import org.apache.kafka.clients.consumer.KafkaConsumer;
import org.apache.kafka.clients.producer.KafkaProducer;
import org.apache.kafka.clients.producer.ProducerRecord;
import org.apache.kafka.common.TopicPartition;
import org.apache.kafka.common.serialization.LongDeserializer;
import org.apache.kafka.common.serialization.Serdes;
import org.apache.kafka.common.serialization.StringDeserializer;
import org.apache.kafka.streams.KafkaStreams;
import org.apache.kafka.streams.StreamsBuilder;
import org.apache.kafka.streams.StreamsConfig;
import org.apache.kafka.streams.kstream.Consumed;
import org.apache.kafka.streams.kstream.Grouped;
import org.apache.kafka.streams.kstream.Materialized;
import org.apache.kafka.streams.kstream.Produced;
import org.apache.kafka.streams.processor.StateRestoreListener;
import org.junit.jupiter.api.AfterAll;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Tag;
import org.junit.jupiter.api.Test;

/**
 * Kafka Streams' word count on Felice: flatMapValues -> groupBy(word) ->
 * count. The groupBy re-keys the stream, so Streams creates a repartition
 * topic, and count() keeps a RocksDB store backed by a compacted changelog
 * topic; both are created by Streams' own Admin client (CreateTopics with
 * configs). The counts must continue correctly across a stop/start with the
 * same state folder, and across a start with a wiped state folder (the store is
 * then restored from the changelog, since the input offsets are committed and
 * old lines are not read again).
 */
@Tag("slow")
class StreamsWordCountTest {
    static final Duration WAIT = Duration.ofSeconds(60);
    static final int PARTITIONS = 3;

    static FeliceBroker broker;
    static Admin admin;
    /** Records the state restore listener saw restored (changelog to store). */
    static final AtomicLong restored = new AtomicLong();

    @BeforeAll
    static void startBroker() {
        broker = FeliceBroker.start("StreamsWordCountTest");
        admin = Support.admin(broker);
    }

    @AfterAll
    static void stopBroker() throws Exception {
        Support.closeAll(admin, broker);
    }

    // Three runs of the same application.id: fresh; restarted on the same
    // state folder with lines fed while it was down; restarted on a wiped
    // state folder. Each time the output topic's latest count per word must
    // match what was fed, and the third run must have restored its store from
    // the changelog topic Felice kept.
    @Test
    void wordCountSurvivesRestartsAndStateLoss() throws Exception {
        String app = Support.unique("wordcount");
        String input = app + "-lines";
        String output = app + "-counts";
        Support.createTopic(admin, input, PARTITIONS);
        Support.createTopic(admin, output, PARTITIONS);
        // Under target/ (Streams warns about state folders in the OS temp folder).
        Path buildDir = Path.of(System.getProperty("felice.build.dir", System.getProperty("java.io.tmpdir")));
        Files.createDirectories(buildDir);
        Path stateDir = Files.createTempDirectory(buildDir, "streams-state-");
        Map<String, Long> expected = new TreeMap<>();
        try (KafkaConsumer<String, Long> out = outputConsumer(output)) {
            Map<String, Long> seen = new TreeMap<>();

            // Run 1: a fresh application.
            KafkaStreams streams = start(app, input, output, stateDir);
            try {
                feed(input, expected, "the quick brown fox", "jumps over the lazy dog", "the dog sleeps",
                        "a fox is quick");
                awaitCounts(out, seen, expected, "run 1");
            } finally {
                close(streams);
            }

            // The internal topics Streams created for itself.
            Set<String> topics = admin.listTopics().names().get();
            String changelog = app + "-counts-store-changelog";
            String repartition = app + "-counts-store-repartition";
            assertTrue(topics.contains(changelog), "changelog topic created: " + topics);
            assertTrue(topics.contains(repartition), "repartition topic created: " + topics);
            TopicDescription cl = admin.describeTopics(List.of(changelog)).allTopicNames().get().get(changelog);
            assertEquals(PARTITIONS, cl.partitions().size(), "changelog co-partitioned with the input");

            // Run 2: lines fed while the application was down, same state folder.
            feed(input, expected, "the end of the fox", "dog days");
            streams = start(app, input, output, stateDir);
            try {
                awaitCounts(out, seen, expected, "run 2 (same state folder)");
                feed(input, expected, "quick quick quick");
                awaitCounts(out, seen, expected, "run 2, live");
            } finally {
                close(streams);
            }

            // Run 3: the state folder is wiped; the store comes back from the changelog.
            FeliceBroker.deleteTree(stateDir);
            Files.createDirectories(stateDir);
            long distinctWords = expected.size();
            feed(input, expected, "the lazy fox", "a new word appears");
            restored.set(0);
            streams = start(app, input, output, stateDir);
            try {
                awaitCounts(out, seen, expected, "run 3 (state restored from the changelog)");
                // One changelog record per update, at least one per word counted before.
                assertTrue(restored.get() >= distinctWords, "records restored from the changelog: "
                        + restored.get() + ", words before: " + distinctWords);
            } finally {
                close(streams);
            }
            assertEquals(expected.get("the"), seen.get("the"));
        } finally {
            FeliceBroker.deleteTree(stateDir);
        }
    }

    private KafkaStreams start(String app, String input, String output, Path stateDir) {
        StreamsBuilder builder = new StreamsBuilder();
        builder.stream(input, Consumed.with(Serdes.String(), Serdes.String()))
                .flatMapValues(line -> Arrays.asList(line.toLowerCase(Locale.ROOT).split("\\W+")))
                .filter((k, word) -> !word.isEmpty())
                .groupBy((k, word) -> word, Grouped.with("counts-store", Serdes.String(), Serdes.String()))
                .count(Materialized.as("counts-store"))
                .toStream()
                .to(output, Produced.with(Serdes.String(), Serdes.Long()));

        Properties p = new Properties();
        p.put(StreamsConfig.APPLICATION_ID_CONFIG, app);
        p.put(StreamsConfig.BOOTSTRAP_SERVERS_CONFIG, broker.bootstrap());
        p.put(StreamsConfig.STATE_DIR_CONFIG, stateDir.toString());
        p.put(StreamsConfig.PROCESSING_GUARANTEE_CONFIG, StreamsConfig.AT_LEAST_ONCE);
        p.put(StreamsConfig.REPLICATION_FACTOR_CONFIG, 1);
        p.put(StreamsConfig.NUM_STREAM_THREADS_CONFIG, 1);
        // Output soon after input: commit (and flush the cache) often.
        p.put(StreamsConfig.COMMIT_INTERVAL_MS_CONFIG, 200);
        p.put(StreamsConfig.STATESTORE_CACHE_MAX_BYTES_CONFIG, 0);
        // Streams deletes consumed repartition records (Admin#deleteRecords)
        // every repartition.purge.interval.ms (30 s by default). Felice lacks
        // DeleteRecords: the call fails in the client with
        // UnsupportedVersionException, which Streams logs at DEBUG and
        // ignores (the repartition topic is then only trimmed by retention).
        // Purging often makes sure that failure stays harmless.
        p.put(StreamsConfig.REPARTITION_PURGE_INTERVAL_MS_CONFIG, 200);
        // Streams' consumer does not send LeaveGroup on close (a dynamic member
        // leaves only by session expiry, and CloseOptions.leaveGroup acts on
        // static members only), so the next run's rebalance waits for the old
        // member's session to expire: keep it at the broker's minimum (6 s).
        p.put(StreamsConfig.consumerPrefix(ConsumerConfig.SESSION_TIMEOUT_MS_CONFIG), 6000);
        p.put(StreamsConfig.consumerPrefix(ConsumerConfig.HEARTBEAT_INTERVAL_MS_CONFIG), 500);
        KafkaStreams streams = new KafkaStreams(builder.build(), p);
        AtomicReference<Throwable> failure = new AtomicReference<>();
        streams.setUncaughtExceptionHandler(e -> {
            failure.set(e);
            return org.apache.kafka.streams.errors.StreamsUncaughtExceptionHandler.StreamThreadExceptionResponse
                    .SHUTDOWN_CLIENT;
        });
        streams.setGlobalStateRestoreListener(new StateRestoreListener() {
            @Override
            public void onRestoreStart(TopicPartition tp, String store, long start, long end) {
            }

            @Override
            public void onBatchRestored(TopicPartition tp, String store, long batchEnd, long count) {
                restored.addAndGet(count);
            }

            @Override
            public void onRestoreEnd(TopicPartition tp, String store, long total) {
            }
        });
        streams.start();
        Support.waitFor(WAIT, app + " RUNNING", () -> streams.state() + (failure.get() == null ? ""
                : " after " + Support.causes(failure.get())), s -> {
                    if (failure.get() != null) {
                        throw new AssertionError("Streams failed: " + s);
                    }
                    return s.equals("RUNNING");
                });
        return streams;
    }

    private static void close(KafkaStreams streams) {
        boolean closed = streams.close(Duration.ofSeconds(30));
        assertTrue(closed, "Streams closed within 30 s");
    }

    private void feed(String input, Map<String, Long> expected, String... lines) throws Exception {
        try (KafkaProducer<String, String> p = Support.stringProducer(broker, Map.of())) {
            int i = 0;
            for (String line : lines) {
                p.send(new ProducerRecord<>(input, "line-" + (i++), line)).get();
                for (String w : line.toLowerCase(Locale.ROOT).split("\\W+")) {
                    if (!w.isEmpty()) {
                        expected.merge(w, 1L, Long::sum);
                    }
                }
            }
        }
    }

    private KafkaConsumer<String, Long> outputConsumer(String output) {
        Properties p = new Properties();
        p.put(ConsumerConfig.BOOTSTRAP_SERVERS_CONFIG, broker.bootstrap());
        p.put(ConsumerConfig.KEY_DESERIALIZER_CLASS_CONFIG, StringDeserializer.class.getName());
        p.put(ConsumerConfig.VALUE_DESERIALIZER_CLASS_CONFIG, LongDeserializer.class.getName());
        KafkaConsumer<String, Long> c = new KafkaConsumer<>(p);
        List<TopicPartition> tps = new java.util.ArrayList<>();
        for (int i = 0; i < PARTITIONS; i++) {
            tps.add(new TopicPartition(output, i));
        }
        c.assign(tps);
        c.seekToBeginning(tps);
        return c;
    }

    /**
     * Reads the output topic until the latest count of every word equals the
     * expected one. A word's count never goes down (a store restored wrongly
     * would start again from 1) nor past what was fed (at-least-once may
     * repeat an update after a crash, and these runs close cleanly).
     */
    private static void awaitCounts(KafkaConsumer<String, Long> out, Map<String, Long> seen,
            Map<String, Long> expected, String what) {
        Map<String, Long> want = new HashMap<>(expected);
        Support.waitFor(WAIT, "word counts of " + what, () -> {
            for (ConsumerRecord<String, Long> r : out.poll(Duration.ofMillis(200))) {
                long before = seen.getOrDefault(r.key(), 0L);
                assertTrue(r.value() <= want.getOrDefault(r.key(), 0L),
                        what + ": count of '" + r.key() + "' is " + r.value() + ", more than fed ("
                                + want.get(r.key()) + ")");
                assertTrue(r.value() >= before,
                        what + ": count of '" + r.key() + "' went down from " + before + " to " + r.value());
                seen.put(r.key(), r.value());
            }
            return new TreeMap<>(seen);
        }, m -> m.equals(new TreeMap<>(want)));
    }
}
