package felice.jvm;

import java.io.File;
import java.io.IOException;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Duration;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;
import java.util.concurrent.TimeUnit;

/**
 * Runs one of Apache Kafka's command-line tools (by its main class) as a
 * subprocess: `java -cp <the jars scripts/kafka-ref resolved> MAIN ARGS...`,
 * with Kafka's log4j2 configuration at WARN. Each run is bounded; a tool still
 * running at its deadline is killed and the test fails.
 *
 * <p>The classpath comes from `scripts/kafka-ref classpath` (which resolves the
 * pinned Kafka release from Maven Central on its first use and caches it under
 * ~/.cache/felice-kafka). The JVM flags trade peak speed for start-up time:
 * these tools run for a second or two.
 */
final class KafkaTool {
    static final String TOPICS = "org.apache.kafka.tools.TopicCommand";
    static final String CONSOLE_PRODUCER = "org.apache.kafka.tools.ConsoleProducer";
    static final String CONSOLE_CONSUMER = "org.apache.kafka.tools.consumer.ConsoleConsumer";
    static final String CONSUMER_GROUPS = "org.apache.kafka.tools.consumer.group.ConsumerGroupCommand";
    static final String CONFIGS = "kafka.admin.ConfigCommand";
    static final String GET_OFFSETS = "org.apache.kafka.tools.GetOffsetShell";
    static final String BROKER_API_VERSIONS = "org.apache.kafka.tools.BrokerApiVersionsCommand";
    static final String PRODUCER_PERF = "org.apache.kafka.tools.ProducerPerformance";
    static final String CONSUMER_PERF = "org.apache.kafka.tools.ConsumerPerformance";
    static final String DELETE_RECORDS = "org.apache.kafka.tools.DeleteRecordsCommand";
    static final String TRANSACTIONS = "org.apache.kafka.tools.TransactionsCommand";
    static final String METADATA_QUORUM = "org.apache.kafka.tools.MetadataQuorumCommand";

    /** What a tool did: its exit code and everything it printed. */
    record Result(List<String> command, int exitCode, String stdout, String stderr) {
        List<String> stdoutLines() {
            return stdout.isEmpty() ? List.of() : Arrays.asList(stdout.split("\n"));
        }

        @Override
        public String toString() {
            return "`" + String.join(" ", command.subList(command.indexOf("-cp") + 2, command.size())) + "` exited "
                    + exitCode + "\n--- stdout ---\n" + stdout + "--- stderr ---\n" + stderr;
        }
    }

    private static String classpath;

    /** The resolved jars (`scripts/kafka-ref classpath`, run once per test JVM). */
    static synchronized String classpath() {
        if (classpath == null) {
            Path script = FeliceBroker.repoRoot().resolve("scripts/kafka-ref");
            try {
                Process p = new ProcessBuilder("python3", script.toString(), "classpath")
                        .redirectError(ProcessBuilder.Redirect.INHERIT)
                        .start();
                String out = new String(p.getInputStream().readAllBytes(), StandardCharsets.UTF_8).trim();
                // The first call may download the release (Maven Central): minutes at most.
                if (!p.waitFor(10, TimeUnit.MINUTES) || p.exitValue() != 0 || out.isEmpty()) {
                    p.destroyForcibly();
                    throw new IllegalStateException(script + " classpath failed (exit "
                            + (p.isAlive() ? "none" : p.exitValue()) + "): " + out);
                }
                String[] lines = out.split("\n");
                classpath = lines[lines.length - 1].trim();
            } catch (IOException e) {
                throw new IllegalStateException("cannot run " + script + ": " + e, e);
            } catch (InterruptedException e) {
                Thread.currentThread().interrupt();
                throw new IllegalStateException(e);
            }
        }
        return classpath;
    }

    static Result run(String mainClass, String... args) {
        return run(Duration.ofSeconds(60), null, mainClass, args);
    }

    /** Runs the tool with `stdin` (or nothing) on its standard input; fails past the timeout. */
    static Result run(Duration timeout, String stdin, String mainClass, String... args) {
        String cp = classpath();
        Path libs = Path.of(cp.endsWith("/*") ? cp.substring(0, cp.length() - 2) : cp);
        List<String> cmd = new ArrayList<>();
        cmd.add(Path.of(System.getProperty("java.home"), "bin", "java").toString());
        cmd.addAll(List.of("-Xmx256m", "-XX:TieredStopAtLevel=1", "-XX:+UseSerialGC", "-Xshare:auto",
                "-Dlog4j2.configurationFile=" + libs.resolve("log4j2.xml"), "-Dfelice.kafka.log.level=WARN",
                "-cp", cp, mainClass));
        cmd.addAll(Arrays.asList(args));
        Path out = null;
        Path err = null;
        Path in = null;
        try {
            out = Files.createTempFile("felice-tool-", ".out");
            err = Files.createTempFile("felice-tool-", ".err");
            ProcessBuilder pb = new ProcessBuilder(cmd)
                    .redirectOutput(out.toFile())
                    .redirectError(err.toFile());
            if (stdin != null) {
                in = Files.createTempFile("felice-tool-", ".in");
                Files.writeString(in, stdin, StandardCharsets.UTF_8);
                pb.redirectInput(in.toFile());
            } else {
                pb.redirectInput(new File("/dev/null"));
            }
            Process p = pb.start();
            if (!p.waitFor(timeout.toMillis(), TimeUnit.MILLISECONDS)) {
                p.destroyForcibly();
                p.waitFor(10, TimeUnit.SECONDS);
                throw new AssertionError("timed out after " + timeout.toSeconds() + " s: " + new Result(cmd, -1,
                        Files.readString(out), Files.readString(err)));
            }
            Result r = new Result(cmd, p.exitValue(), Files.readString(out, StandardCharsets.UTF_8),
                    Files.readString(err, StandardCharsets.UTF_8));
            // Kept in the test's output file (target/surefire-reports/*-output.txt).
            System.out.println(r);
            return r;
        } catch (IOException e) {
            throw new IllegalStateException(e);
        } catch (InterruptedException e) {
            Thread.currentThread().interrupt();
            throw new IllegalStateException(e);
        } finally {
            for (Path f : new Path[] {out, err, in}) {
                if (f != null) {
                    f.toFile().delete();
                }
            }
        }
    }
}
