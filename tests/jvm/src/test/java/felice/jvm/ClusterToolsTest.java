package felice.jvm;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;
import static org.junit.jupiter.api.Assumptions.assumeTrue;

import felice.jvm.KafkaTool.Result;
import java.io.BufferedReader;
import java.io.IOException;
import java.io.InputStreamReader;
import java.net.InetSocketAddress;
import java.net.ServerSocket;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Duration;
import java.util.Collection;
import java.util.HashSet;
import java.util.List;
import java.util.Properties;
import java.util.Set;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.TimeUnit;
import java.util.regex.Matcher;
import java.util.regex.Pattern;
import java.util.stream.Collectors;
import org.apache.kafka.clients.admin.Admin;
import org.apache.kafka.clients.admin.AdminClientConfig;
import org.apache.kafka.clients.admin.QuorumInfo;
import org.apache.kafka.common.Node;
import org.junit.jupiter.api.AfterAll;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.MethodOrderer;
import org.junit.jupiter.api.Order;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.TestMethodOrder;

/**
 * Kafka's tools and the Java Admin client against a three-node cluster that
 * `felice dev cluster --nodes 3` starts (each node its own process): the
 * brokers, the metadata quorum, and topics whose partitions are led across
 * the brokers.
 */
@TestMethodOrder(MethodOrderer.OrderAnnotation.class)
class ClusterToolsTest {
    static final Duration START_TIMEOUT = Duration.ofSeconds(60);

    static Process cluster;
    static Path dir;
    static String bootstrap;
    static Admin admin;

    @BeforeAll
    static void startCluster() throws Exception {
        assumeTrue(System.getenv("FELICE_JVM_BOOTSTRAP") == null
                || System.getenv("FELICE_JVM_BOOTSTRAP").isEmpty(), "needs the felice binary");
        dir = Files.createTempDirectory("felice-jvm-cluster-");
        int base = freeBase();
        cluster = new ProcessBuilder(FeliceBroker.binary().toString(), "dev", "cluster", "--nodes", "3",
                "--dir", dir.resolve("cluster").toString(), "--base-port", String.valueOf(base))
                .redirectError(dir.resolve("cluster.err").toFile())
                .start();
        BufferedReader out = new BufferedReader(new InputStreamReader(cluster.getInputStream(),
                StandardCharsets.UTF_8));
        // The first line is the bootstrap list, printed once every node serves.
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
        KafkaTool.classpath();
    }

    @AfterAll
    static void stopCluster() throws Exception {
        if (admin != null) {
            admin.close();
        }
        if (cluster != null) {
            cluster.destroy(); // SIGTERM: the command stops every node cleanly
            if (!cluster.waitFor(60, TimeUnit.SECONDS)) {
                cluster.destroyForcibly();
            }
        }
    }

    /** A base port whose three client ports and three controller ports (+100) are free. */
    static int freeBase() throws IOException {
        for (int attempt = 0; attempt < 50; attempt++) {
            int base = FeliceBroker.freePort();
            if (base + 102 > 65535) {
                continue;
            }
            boolean free = true;
            for (int port : new int[] {base + 1, base + 2, base + 100, base + 101, base + 102}) {
                try (ServerSocket s = new ServerSocket()) {
                    s.bind(new InetSocketAddress("127.0.0.1", port));
                } catch (IOException e) {
                    free = false;
                    break;
                }
            }
            if (free) {
                return base;
            }
        }
        throw new IOException("no free port range for the cluster");
    }

    static Result ok(Result r) {
        assertEquals(0, r.exitCode(), r.toString());
        return r;
    }

    // The Java Admin: describeCluster lists the three brokers;
    // describeMetadataQuorum the three voters, their leader, and each voter
    // caught up with the high watermark.
    @Test
    void adminDescribesTheBrokersAndTheQuorum() throws Exception {
        Collection<Node> nodes = admin.describeCluster().nodes().get();
        assertEquals(Set.of(1, 2, 3), nodes.stream().map(Node::id).collect(Collectors.toSet()), nodes.toString());
        QuorumInfo q = Support.waitFor(Duration.ofSeconds(30), "every voter caught up", () -> {
            try {
                return admin.describeMetadataQuorum().quorumInfo().get();
            } catch (Exception e) {
                throw new RuntimeException(e);
            }
        }, info -> info.voters().stream().allMatch(v -> v.logEndOffset() == info.highWatermark()));
        assertEquals(Set.of(1, 2, 3), q.voters().stream().map(QuorumInfo.ReplicaState::replicaId)
                .collect(Collectors.toSet()));
        assertTrue(Set.of(1, 2, 3).contains(q.leaderId()), q.toString());
        assertTrue(q.leaderEpoch() >= 1, q.toString());
        assertTrue(q.observers().isEmpty(), q.toString());
    }

    // kafka-metadata-quorum describe --status and --replication.
    @Test
    void metadataQuorumTool() {
        Result status = ok(KafkaTool.run(KafkaTool.METADATA_QUORUM, "--bootstrap-server", bootstrap,
                "describe", "--status"));
        Matcher leader = Pattern.compile("(?m)^LeaderId:\\s+([123])$").matcher(status.stdout());
        assertTrue(leader.find(), status.toString());
        assertTrue(Pattern.compile("(?m)^CurrentVoters:\\s+\\[\\{\"id\": 1, .*\\{\"id\": 2, .*\\{\"id\": 3, ")
                .matcher(status.stdout()).find(), status.toString());
        Result replication = ok(KafkaTool.run(KafkaTool.METADATA_QUORUM, "--bootstrap-server", bootstrap,
                "describe", "--replication"));
        List<String> rows = replication.stdoutLines().subList(1, replication.stdoutLines().size());
        assertEquals(3, rows.size(), replication.toString());
        assertEquals(1, rows.stream().filter(r -> r.trim().endsWith("Leader")).count(), replication.toString());
        assertEquals(2, rows.stream().filter(r -> r.trim().endsWith("Follower")).count(), replication.toString());
        assertTrue(rows.stream().filter(r -> r.startsWith(leader.group(1) + " ")).allMatch(r -> r.trim().endsWith("Leader")),
                replication.toString());
    }

    // kafka-topics --create, --describe: partitions led by all three
    // brokers; --alter --partitions through any broker.
    @Test
    void topicsToolOnTheCluster() {
        String topic = Support.unique("cluster-topic");
        ok(KafkaTool.run(KafkaTool.TOPICS, "--bootstrap-server", bootstrap, "--create", "--topic", topic,
                "--partitions", "6"));
        Result d = ok(KafkaTool.run(KafkaTool.TOPICS, "--bootstrap-server", bootstrap, "--describe",
                "--topic", topic));
        assertTrue(d.stdoutLines().get(0).contains("\tPartitionCount: 6\tReplicationFactor: 1\t"), d.toString());
        Set<String> leaders = new HashSet<>();
        Matcher m = Pattern.compile("\tLeader: (\\d+)\tReplicas: (\\d+)\tIsr: (\\d+)").matcher(d.stdout());
        while (m.find()) {
            assertEquals(m.group(1), m.group(2), d.toString());
            leaders.add(m.group(1));
        }
        assertEquals(Set.of("1", "2", "3"), leaders, d.toString());
        ok(KafkaTool.run(KafkaTool.TOPICS, "--bootstrap-server", bootstrap.split(",")[2], "--alter", "--topic",
                topic, "--partitions", "9"));
        Result grown = ok(KafkaTool.run(KafkaTool.TOPICS, "--bootstrap-server", bootstrap, "--describe",
                "--topic", topic));
        assertTrue(grown.stdoutLines().get(0).contains("\tPartitionCount: 9\t"), grown.toString());
    }
    // kafka-topics with replication factor 3: --describe shows three
    // replicas and a full ISR, --under-replicated-partitions lists nothing;
    // after kill -9 of node 3 the ISR shrinks and the tool lists every
    // partition of the topic, while --unavailable-partitions lists none
    // (each still has a leader). Runs last: it leaves node 3 dead.
    @Test
    @Order(Integer.MAX_VALUE)
    void underReplicatedPartitionsAfterABrokerDies() throws Exception {
        String topic = Support.unique("replicated");
        ok(KafkaTool.run(KafkaTool.TOPICS, "--bootstrap-server", bootstrap, "--create", "--topic", topic,
                "--partitions", "3", "--replication-factor", "3"));
        Pattern row = Pattern.compile("\\tPartition: (\\d+)\\tLeader: (\\d+)\\tReplicas: ([\\d,]+)\\tIsr: ([\\d,]+)");
        Result d = Support.waitFor(Duration.ofSeconds(30), "three replicas in sync",
                () -> ok(KafkaTool.run(KafkaTool.TOPICS, "--bootstrap-server", bootstrap, "--describe",
                        "--topic", topic)),
                r -> {
                    Matcher m = row.matcher(r.stdout());
                    int full = 0;
                    while (m.find()) {
                        full += m.group(3).split(",").length == 3 && m.group(4).split(",").length == 3 ? 1 : 0;
                    }
                    return full == 3;
                });
        assertTrue(d.stdoutLines().get(0).contains("\tReplicationFactor: 3\t"), d.toString());
        Result none = ok(KafkaTool.run(KafkaTool.TOPICS, "--bootstrap-server", bootstrap, "--describe",
                "--under-replicated-partitions", "--topic", topic));
        assertEquals("", none.stdout().trim(), none.toString());

        long pid = Long.parseLong(Files.readString(dir.resolve("cluster").resolve("node-3").resolve("pid")).trim());
        ProcessHandle.of(pid).orElseThrow().destroyForcibly();
        String survivors = bootstrap.split(",")[0] + "," + bootstrap.split(",")[1];
        Result under = Support.waitFor(Duration.ofSeconds(30), "every partition under-replicated",
                () -> ok(KafkaTool.run(KafkaTool.TOPICS, "--bootstrap-server", survivors, "--describe",
                        "--under-replicated-partitions", "--topic", topic)),
                r -> {
                    Matcher m = row.matcher(r.stdout());
                    int listed = 0;
                    while (m.find()) {
                        listed += m.group(4).split(",").length == 2 && !m.group(4).contains("3") ? 1 : 0;
                    }
                    return listed == 3;
                });
        Matcher m = row.matcher(under.stdout());
        while (m.find()) {
            assertTrue(!m.group(2).equals("3"), "node 3 still leads: " + under);
        }
        Result unavailable = ok(KafkaTool.run(KafkaTool.TOPICS, "--bootstrap-server", survivors, "--describe",
                "--unavailable-partitions", "--topic", topic));
        assertEquals("", unavailable.stdout().trim(), unavailable.toString());
    }
}
