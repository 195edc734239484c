package felice.jvm;

import java.io.DataInputStream;
import java.io.DataOutputStream;
import java.io.IOException;
import java.io.UncheckedIOException;
import java.net.InetSocketAddress;
import java.net.ServerSocket;
import java.net.Socket;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.StandardCopyOption;
import java.time.Duration;
import java.util.ArrayList;
import java.util.Comparator;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.concurrent.TimeUnit;
import java.util.stream.Stream;

/**
 * One `felice server` process for a test class (or a test that restarts it).
 *
 * <p>It listens on a free loopback port with its own temporary data folder.
 * {@link #start()} returns once the port answers an ApiVersions request (polled
 * with a bound; a process that exits during start-up fails at once with its
 * log). {@link #stop()} sends SIGTERM (Process.destroy) and SIGKILL
 * (destroyForcibly) if the process is still there after a timeout. A stop and
 * a start keep the port and the data folder, so a restart sees what the
 * previous process wrote. {@link #close()} stops it, copies its log to
 * target/felice-logs/ and deletes the data.
 *
 * <p>The binary is $FELICE_BIN, by default target/release/felice under the
 * repository root (the root is passed by the pom as felice.repo.root).
 *
 * <p>To check what the tests assert against another broker (Apache Kafka via
 * scripts/kafka-ref start), set FELICE_JVM_BOOTSTRAP=HOST:PORT: no process is
 * started, and tests that restart the broker are skipped. The recorded-gap
 * tests are then expected to fail (Kafka has those APIs).
 */
public final class FeliceBroker implements AutoCloseable {
    static final Duration START_TIMEOUT = Duration.ofSeconds(20);
    static final Duration STOP_TIMEOUT = Duration.ofSeconds(10);

    private final String name;
    private final Path binary;
    private final Path workDir;
    private final Path dataDir;
    private final Path logFile;
    private final int port;
    private final String external;
    private final Map<String, String> overrides = new LinkedHashMap<>();
    private volatile Process process;
    private int starts;

    private FeliceBroker(String name, Map<String, String> extra) throws IOException {
        this.name = name;
        this.binary = binary();
        this.workDir = Files.createTempDirectory("felice-jvm-" + name + "-");
        this.dataDir = workDir.resolve("data");
        this.logFile = workDir.resolve("broker.log");
        this.external = System.getenv("FELICE_JVM_BOOTSTRAP");
        this.port = external != null && !external.isEmpty()
                ? Integer.parseInt(external.substring(external.lastIndexOf(':') + 1))
                : freePort();
        // Groups form at once: the broker's default (3 s, as Kafka's) only slows the tests.
        overrides.put("group.initial.rebalance.delay.ms", "0");
        overrides.putAll(extra);
        // If the test JVM is stopped (a Surefire timeout, Ctrl-C), the broker goes too.
        Runtime.getRuntime().addShutdownHook(new Thread(() -> {
            Process p = process;
            if (p != null && p.isAlive()) {
                p.destroyForcibly();
            }
        }, "stop-" + name));
    }

    /** Starts a broker named after the test class (its folder and log carry the name). */
    public static FeliceBroker start(String name) {
        return start(name, Map.of());
    }

    public static FeliceBroker start(String name, Map<String, String> overrides) {
        try {
            FeliceBroker broker = new FeliceBroker(name, overrides);
            broker.start();
            return broker;
        } catch (IOException e) {
            throw new UncheckedIOException(e);
        }
    }

    public static Path repoRoot() {
        String root = System.getProperty("felice.repo.root");
        if (root == null) {
            // Not started by Maven: assume the working folder is tests/jvm.
            root = Path.of("").toAbsolutePath().resolve("../..").toString();
        }
        return Path.of(root).toAbsolutePath().normalize();
    }

    public static Path binary() {
        String bin = System.getenv("FELICE_BIN");
        if (bin != null && !bin.isEmpty()) {
            return Path.of(bin).toAbsolutePath();
        }
        return repoRoot().resolve("target/release/felice");
    }

    public static int freePort() throws IOException {
        try (ServerSocket s = new ServerSocket()) {
            s.setReuseAddress(false);
            s.bind(new InetSocketAddress("127.0.0.1", 0));
            return s.getLocalPort();
        }
    }

    public String bootstrap() {
        return "127.0.0.1:" + port;
    }

    /** True when the tests run against a broker this class did not start (FELICE_JVM_BOOTSTRAP). */
    public boolean isExternal() {
        return external != null && !external.isEmpty();
    }

    public int port() {
        return port;
    }

    public Path logFile() {
        return logFile;
    }

    public long pid() {
        return process.pid();
    }

    public boolean alive() {
        return process != null && process.isAlive();
    }

    public List<String> command() {
        List<String> cmd = new ArrayList<>();
        cmd.add(binary.toString());
        cmd.add("server");
        Map<String, String> all = new LinkedHashMap<>();
        all.put("listeners", "PLAINTEXT://" + bootstrap());
        all.put("log.dirs", dataDir.toString());
        all.putAll(overrides);
        all.forEach((k, v) -> {
            cmd.add("--override");
            cmd.add(k + "=" + v);
        });
        return cmd;
    }

    /** Starts the process and waits until it answers ApiVersions. */
    public synchronized void start() {
        if (isExternal()) {
            return;
        }
        if (alive()) {
            throw new IllegalStateException("broker already running");
        }
        if (!Files.isExecutable(binary)) {
            throw new IllegalStateException("broker binary " + binary
                    + " does not exist (build it with cargo build --release, or point FELICE_BIN at it)");
        }
        try {
            starts++;
            Files.writeString(logFile, "\n===== start #" + starts + ": " + String.join(" ", command()) + "\n",
                    StandardCharsets.UTF_8, java.nio.file.StandardOpenOption.CREATE,
                    java.nio.file.StandardOpenOption.APPEND);
            ProcessBuilder pb = new ProcessBuilder(command())
                    .directory(workDir.toFile())
                    .redirectErrorStream(true)
                    .redirectOutput(ProcessBuilder.Redirect.appendTo(logFile.toFile()))
                    .redirectInput(ProcessBuilder.Redirect.from(new java.io.File("/dev/null")));
            process = pb.start();
        } catch (IOException e) {
            throw new UncheckedIOException(e);
        }
        long deadline = System.nanoTime() + START_TIMEOUT.toNanos();
        String last = "no attempt";
        while (System.nanoTime() < deadline) {
            if (!process.isAlive()) {
                throw new IllegalStateException("broker exited with code " + process.exitValue()
                        + " during start-up:\n" + logTail(40));
            }
            try {
                short error = apiVersionsError();
                if (error == 0) {
                    return;
                }
                last = "ApiVersions error " + error;
            } catch (IOException e) {
                last = e.toString();
            }
            pause(50);
        }
        process.destroyForcibly();
        throw new IllegalStateException("broker did not answer on " + bootstrap() + " within "
                + START_TIMEOUT.toSeconds() + " s (" + last + "):\n" + logTail(40));
    }

    /** An ApiVersions v0 round trip on a new connection; returns the response's error code. */
    private short apiVersionsError() throws IOException {
        try (Socket s = new Socket()) {
            s.connect(new InetSocketAddress("127.0.0.1", port), 1000);
            s.setSoTimeout(2000);
            byte[] clientId = "felice-jvm-ready".getBytes(StandardCharsets.UTF_8);
            DataOutputStream out = new DataOutputStream(s.getOutputStream());
            out.writeInt(2 + 2 + 4 + 2 + clientId.length);
            out.writeShort(18); // ApiVersions
            out.writeShort(0);
            out.writeInt(7); // correlation id
            out.writeShort(clientId.length);
            out.write(clientId);
            out.flush();
            DataInputStream in = new DataInputStream(s.getInputStream());
            int size = in.readInt();
            if (size < 6) {
                throw new IOException("short ApiVersions response: " + size + " bytes");
            }
            int correlation = in.readInt();
            if (correlation != 7) {
                throw new IOException("ApiVersions response with correlation id " + correlation);
            }
            return in.readShort();
        }
    }

    /**
     * SIGTERM, then SIGKILL if the process is still running after the timeout.
     * Returns true when SIGTERM sufficed.
     */
    public synchronized boolean stop() {
        if (process == null || !process.isAlive()) {
            return true;
        }
        process.destroy();
        try {
            if (process.waitFor(STOP_TIMEOUT.toMillis(), TimeUnit.MILLISECONDS)) {
                return true;
            }
            process.destroyForcibly();
            process.waitFor(10, TimeUnit.SECONDS);
            return false;
        } catch (InterruptedException e) {
            Thread.currentThread().interrupt();
            process.destroyForcibly();
            return false;
        }
    }

    /** Stop then start on the same port and data folder; fails if SIGTERM was not enough. */
    public void restart() {
        org.junit.jupiter.api.Assumptions.assumeFalse(isExternal(), "cannot restart an external broker");
        if (!stop()) {
            throw new IllegalStateException("broker ignored SIGTERM for " + STOP_TIMEOUT.toSeconds()
                    + " s:\n" + logTail(40));
        }
        start();
    }

    public String logTail(int lines) {
        try {
            List<String> all = Files.readAllLines(logFile, StandardCharsets.UTF_8);
            return String.join("\n", all.subList(Math.max(0, all.size() - lines), all.size()));
        } catch (IOException e) {
            return "(no log: " + e + ")";
        }
    }

    public String log() {
        try {
            return Files.readString(logFile, StandardCharsets.UTF_8);
        } catch (IOException e) {
            return "";
        }
    }

    @Override
    public void close() {
        stop();
        try {
            String buildDir = System.getProperty("felice.build.dir");
            if (buildDir != null && Files.exists(logFile)) {
                Path logs = Path.of(buildDir, "felice-logs");
                Files.createDirectories(logs);
                Files.copy(logFile, logs.resolve(name + ".log"), StandardCopyOption.REPLACE_EXISTING);
            }
        } catch (IOException ignored) {
            // the log is a convenience; the data must still go
        }
        deleteTree(workDir);
    }

    static void deleteTree(Path root) {
        if (root == null || !Files.exists(root)) {
            return;
        }
        try (Stream<Path> paths = Files.walk(root)) {
            paths.sorted(Comparator.reverseOrder()).forEach(p -> p.toFile().delete());
        } catch (IOException ignored) {
            // best effort
        }
    }

    private static void pause(long millis) {
        try {
            Thread.sleep(millis);
        } catch (InterruptedException e) {
            Thread.currentThread().interrupt();
            throw new IllegalStateException(e);
        }
    }
}
