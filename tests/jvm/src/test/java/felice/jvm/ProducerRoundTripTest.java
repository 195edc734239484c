package felice.jvm;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertNotNull;
import static org.junit.jupiter.api.Assertions.assertNull;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.nio.charset.StandardCharsets;
import java.time.Duration;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.HashMap;
import java.util.List;
import java.util.Map;
import java.util.Random;
import java.util.concurrent.Future;

import org.apache.kafka.clients.admin.Admin;
import org.apache.kafka.clients.consumer.ConsumerRecord;
import org.apache.kafka.clients.consumer.KafkaConsumer;
import org.apache.kafka.clients.producer.KafkaProducer;
import org.apache.kafka.clients.producer.ProducerConfig;
import org.apache.kafka.clients.producer.ProducerRecord;
import org.apache.kafka.clients.producer.RecordMetadata;
import org.apache.kafka.common.KafkaException;
import org.apache.kafka.common.TopicPartition;
import org.apache.kafka.common.header.Header;
import org.apache.kafka.common.header.internals.RecordHeaders;
import org.apache.kafka.common.record.TimestampType;
import org.junit.jupiter.api.AfterAll;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.ValueSource;

/**
 * The Java producer with the client's defaults (acks=all, enable.idempotence=true
 * in Kafka 4.x, linger.ms=5 so records batch), once per compression codec, and a
 * consumer reading everything back. What the producer was told (offsets and
 * timestamps in RecordMetadata) and what it sent (keys, values, headers) must be
 * exactly what the consumer sees: that is the whole point of a log.
 */
class ProducerRoundTripTest {
    static FeliceBroker broker;
    static Admin admin;

    @BeforeAll
    static void startBroker() {
        broker = FeliceBroker.start("ProducerRoundTripTest");
        admin = Support.admin(broker);
    }

    @AfterAll
    static void stopBroker() throws Exception {
        Support.closeAll(admin, broker);
    }

    /** One sent record and what the broker said about it. */
    record Sent(ProducerRecord<byte[], byte[]> record, Future<RecordMetadata> ack) {
    }

    // Each codec the Java client ships. The broker stores the batches as the
    // producer compressed them (compression.type=producer) and the consumer
    // decompresses them: a codec Felice mishandles shows up as a CorruptRecord
    // error, a wrong record count, or a changed byte.
    @ParameterizedTest(name = "compression.type={0}")
    @ValueSource(strings = {"none", "gzip", "snappy", "lz4", "zstd"})
    void roundTripWithCodec(String codec) throws Exception {
        String topic = Support.unique("produce-" + codec);
        int partitions = 3;
        Support.createTopic(admin, topic, partitions);

        Random random = new Random(codec.hashCode());
        long baseTimestamp = System.currentTimeMillis() - 3_600_000L;
        List<Sent> sent = new ArrayList<>();
        try (KafkaProducer<byte[], byte[]> producer = Support.bytesProducer(broker,
                Map.of(ProducerConfig.COMPRESSION_TYPE_CONFIG, codec))) {
            for (int i = 0; i < 300; i++) {
                byte[] key = i % 10 == 0 ? null : ("key-" + (i % 37)).getBytes(StandardCharsets.UTF_8);
                byte[] value = value(i, random);
                RecordHeaders headers = new RecordHeaders();
                if (i % 3 != 0) {
                    headers.add("trace", ("t-" + i).getBytes(StandardCharsets.UTF_8));
                    // a repeated key: both values must come back, in order
                    headers.add("hop", "first".getBytes(StandardCharsets.UTF_8));
                    headers.add("hop", "second".getBytes(StandardCharsets.UTF_8));
                    // binary, with every byte value, and an empty and a null value
                    byte[] binary = new byte[256];
                    for (int b = 0; b < 256; b++) {
                        binary[b] = (byte) (b ^ i);
                    }
                    headers.add("bin", binary);
                    headers.add("empty", new byte[0]);
                    headers.add("null", null);
                }
                // Half the records carry their own CreateTime (an hour back), the
                // others get the producer's clock.
                Long timestamp = i % 2 == 0 ? baseTimestamp + i : null;
                // Keyless records go to an explicit partition so every partition gets some.
                Integer partition = key == null ? i % partitions : null;
                ProducerRecord<byte[], byte[]> rec =
                        new ProducerRecord<>(topic, partition, timestamp, key, value, headers);
                sent.add(new Sent(rec, producer.send(rec)));
            }
            producer.flush();
        }

        Map<TopicPartition, Map<Long, Sent>> byPosition = new HashMap<>();
        for (Sent s : sent) {
            RecordMetadata md = s.ack().get();
            assertTrue(md.hasOffset(), "acks=all returns an offset");
            byPosition.computeIfAbsent(new TopicPartition(md.topic(), md.partition()), tp -> new HashMap<>())
                    .put(md.offset(), s);
        }
        // Offsets per partition are dense, from 0, in send order.
        for (var entry : byPosition.entrySet()) {
            List<Long> offsets = new ArrayList<>(entry.getValue().keySet());
            offsets.sort(null);
            for (int i = 0; i < offsets.size(); i++) {
                assertEquals(i, offsets.get(i), "offsets of " + entry.getKey() + " are dense from 0");
            }
        }

        try (KafkaConsumer<byte[], byte[]> consumer = Support.bytesConsumer(broker, Map.of())) {
            List<TopicPartition> tps = new ArrayList<>();
            for (int p = 0; p < partitions; p++) {
                tps.add(new TopicPartition(topic, p));
            }
            consumer.assign(tps);
            consumer.seekToBeginning(tps);
            List<ConsumerRecord<byte[], byte[]>> got = Support.pollCount(consumer, sent.size(), Duration.ofSeconds(30));
            assertEquals(sent.size(), got.size(), "no record twice, none extra");
            for (ConsumerRecord<byte[], byte[]> r : got) {
                TopicPartition tp = new TopicPartition(r.topic(), r.partition());
                Sent s = byPosition.get(tp).get(r.offset());
                assertNotNull(s, "a record at " + tp + "@" + r.offset() + " that was never acknowledged");
                RecordMetadata md = s.ack().get();
                String where = codec + " " + tp + "@" + r.offset();
                assertArrayEquals(s.record().key(), r.key(), "key at " + where);
                assertArrayEquals(s.record().value(), r.value(), "value at " + where);
                assertEquals(TimestampType.CREATE_TIME, r.timestampType(), "timestamp type at " + where);
                assertEquals(md.timestamp(), r.timestamp(), "timestamp the producer was told, at " + where);
                if (s.record().timestamp() != null) {
                    assertEquals(s.record().timestamp().longValue(), r.timestamp(), "explicit timestamp at " + where);
                }
                assertHeadersEqual(s.record().headers().toArray(), r.headers().toArray(), where);
                assertEquals(s.record().key() == null ? -1 : s.record().key().length, r.serializedKeySize());
            }
        }
    }

    // Recorded gap: transactions. A transactional producer first looks up its
    // transaction coordinator (FindCoordinator, key type 1); Felice answers
    // INVALID_REQUEST with a message, which the producer treats as fatal, so
    // initTransactions() fails at once. Turns green when transactions land:
    // then assert a committed transaction is visible to a read_committed
    // consumer and an aborted one is not.
    @Test
    void recordedGapTransactionalProducer() {
        try (KafkaProducer<byte[], byte[]> producer = Support.bytesProducer(broker, Map.of(
                ProducerConfig.TRANSACTIONAL_ID_CONFIG, Support.unique("txn"),
                ProducerConfig.MAX_BLOCK_MS_CONFIG, "10000"))) {
            KafkaException e = assertThrows(KafkaException.class, producer::initTransactions);
            assertEquals(KafkaException.class, e.getClass(), Support.causes(e));
            assertTrue(e.getMessage().matches("Could not find a coordinator with type TRANSACTION with key "
                    + "jvm-txn-[0-9a-f]{8} due to unexpected error: key type 1 is not supported "
                    + "\\(only consumer groups, 0\\)"), e.getMessage());
        }
    }

    private static byte[] value(int i, Random random) {
        if (i % 50 == 7) {
            return null; // a tombstone
        }
        if (i % 50 == 8) {
            return new byte[0];
        }
        if (i % 100 == 1) {
            // A large, compressible value (the codecs must round-trip more than one block).
            byte[] big = new byte[200_000];
            for (int b = 0; b < big.length; b++) {
                big[b] = (byte) ("felice".charAt(b % 6) + (b / 4096));
            }
            return big;
        }
        byte[] v = new byte[16 + random.nextInt(200)];
        random.nextBytes(v);
        return v;
    }

    private static void assertHeadersEqual(Header[] expected, Header[] actual, String where) {
        assertEquals(expected.length, actual.length, "header count at " + where + ": " + Arrays.toString(actual));
        for (int h = 0; h < expected.length; h++) {
            assertEquals(expected[h].key(), actual[h].key(), "header " + h + " key at " + where);
            if (expected[h].value() == null) {
                assertNull(actual[h].value(), "header " + h + " (null value) at " + where);
            } else {
                assertArrayEquals(expected[h].value(), actual[h].value(), "header " + h + " value at " + where);
            }
        }
    }
}
