package felicego

// Go clients through a leader's kill -9 on a three-node cluster (`felice dev
// cluster --nodes 3`, each node its own process): an idempotent acks=all
// producer (franz-go; Sarama) keeps producing to a replication-factor-3
// partition with min.insync.replicas=2 while its leader is killed. Every
// record must be acknowledged without error and read back exactly once, in
// order. Waits are bounded conditions.

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/IBM/sarama"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
)

const failoverRecords = 3000

// DevCluster is one `felice dev cluster --nodes 3` process and its nodes.
type DevCluster struct {
	Bootstrap []string
	dir       string
	cmd       *exec.Cmd
}

// freeBase finds a base port whose client (base..base+2) and controller
// (base+100..base+102) ports are free.
func freeBase(tb testing.TB) int {
	for i := 0; i < 50; i++ {
		base := freePort(tb)
		if base+102 > 65535 {
			continue
		}
		ok := true
		for _, p := range []int{base + 1, base + 2, base + 100, base + 101, base + 102} {
			l, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", p))
			if err != nil {
				ok = false
				break
			}
			l.Close()
		}
		if ok {
			return base
		}
	}
	tb.Fatal("no free port range for the cluster")
	return 0
}

func startDevCluster(t *testing.T) *DevCluster {
	t.Helper()
	if os.Getenv("FELICE_GO_EXTERNAL") != "" {
		t.Skip("needs the felice binary to start a cluster")
	}
	dir := t.TempDir()
	cmd := exec.Command(feliceBin(t), "dev", "cluster", "--nodes", "3", "--dir", filepath.Join(dir, "cluster"),
		"--base-port", strconv.Itoa(freeBase(t)))
	errLog, err := os.Create(filepath.Join(dir, "cluster.err"))
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = errLog
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatalf("start dev cluster: %v", err)
	}
	c := &DevCluster{dir: filepath.Join(dir, "cluster"), cmd: cmd}
	t.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		done := make(chan struct{})
		go func() { _ = cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(60 * time.Second):
			_ = cmd.Process.Kill()
		}
		if t.Failed() {
			for n := 1; n <= 3; n++ {
				b, _ := os.ReadFile(filepath.Join(c.dir, fmt.Sprintf("node-%d", n), "server.log"))
				lines := strings.Split(string(b), "\n")
				if len(lines) > 30 {
					lines = lines[len(lines)-30:]
				}
				t.Logf("--- node %d:\n%s", n, strings.Join(lines, "\n"))
			}
		}
	})
	line := make(chan string, 1)
	go func() {
		s := bufio.NewScanner(out)
		if s.Scan() {
			line <- s.Text()
		}
		close(line)
		_, _ = bufio.NewReader(out).WriteTo(discard{})
	}()
	select {
	case l := <-line:
		c.Bootstrap = strings.Split(strings.TrimSpace(l), ",")
	case <-time.After(60 * time.Second):
	}
	if len(c.Bootstrap) != 3 {
		t.Fatalf("dev cluster did not start: %v", c.Bootstrap)
	}
	return c
}

// mustKgo is a franz-go client on the given options (closed with the test).
func mustKgo(t *testing.T, opts ...kgo.Opt) *kgo.Client {
	t.Helper()
	cl, err := kgo.NewClient(opts...)
	if err != nil {
		t.Fatalf("kgo client: %v", err)
	}
	return cl
}

type discard struct{}

func (discard) Write(p []byte) (int, error) { return len(p), nil }

func (c *DevCluster) kill9(t *testing.T, node int32) {
	b, err := os.ReadFile(filepath.Join(c.dir, fmt.Sprintf("node-%d", node), "pid"))
	if err != nil {
		t.Fatalf("pid of node %d: %v", node, err)
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil {
		t.Fatalf("pid of node %d: %v", node, err)
	}
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
		t.Fatalf("kill -9 node %d: %v", node, err)
	}
}

// replicatedTopic creates a one-partition topic of three replicas,
// min.insync.replicas=2, and waits for its full ISR; returns its leader.
func replicatedTopic(t *testing.T, adm *kadm.Client, topic string) int32 {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	two := "2"
	resp, err := adm.CreateTopic(ctx, 1, 3, map[string]*string{"min.insync.replicas": &two}, topic)
	if err != nil || resp.Err != nil {
		t.Fatalf("create %s: %v %v", topic, err, resp.Err)
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		td, err := adm.ListTopics(ctx, topic)
		if err == nil {
			if p, ok := td[topic].Partitions[0]; ok && p.Err == nil && p.Leader >= 0 && len(p.ISR) == 3 {
				return p.Leader
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("three replicas of %s never in sync", topic)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func leaderOf(t *testing.T, adm *kadm.Client, topic string) int32 {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	td, err := adm.ListTopics(ctx, topic)
	if err != nil {
		return -1
	}
	p, ok := td[topic].Partitions[0]
	if !ok || p.Err != nil {
		return -1
	}
	return p.Leader
}

func failoverValue(i int) string { return fmt.Sprintf("r%06d", i) }

// readBack reads partition 0 from the start and checks every value once, in order.
func readBack(t *testing.T, bootstrap []string, topic string) {
	t.Helper()
	cl, err := kgo.NewClient(kgo.SeedBrokers(bootstrap...),
		kgo.ConsumePartitions(map[string]map[int32]kgo.Offset{topic: {0: kgo.NewOffset().AtStart()}}))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	var got []string
	deadline := time.Now().Add(60 * time.Second)
	for len(got) < failoverRecords && time.Now().Before(deadline) {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		fs := cl.PollFetches(ctx)
		cancel()
		fs.EachRecord(func(r *kgo.Record) { got = append(got, string(r.Value)) })
	}
	if len(got) != failoverRecords {
		t.Fatalf("read back %d records, want %d", len(got), failoverRecords)
	}
	for i, v := range got {
		if v != failoverValue(i) {
			t.Fatalf("record %d is %q, want %q", i, v, failoverValue(i))
		}
	}
}

func TestClusterKgoIdempotentProducerSurvivesTheLeadersKill9(t *testing.T) {
	c := startDevCluster(t)
	adm := kadm.NewClient(mustKgo(t, kgo.SeedBrokers(c.Bootstrap...)))
	defer adm.Close()
	topic := unique(t, "kgo-failover")
	leader := replicatedTopic(t, adm, topic)
	// kgo's defaults: idempotent, acks=all, retries until the delivery timeout.
	cl := mustKgo(t, kgo.SeedBrokers(c.Bootstrap...), kgo.DefaultProduceTopic(topic),
		kgo.RecordPartitioner(kgo.ManualPartitioner()), kgo.ProducerLinger(2*time.Millisecond))
	defer cl.Close()
	results := make(chan error, failoverRecords)
	for i := 0; i < failoverRecords; i++ {
		cl.Produce(context.Background(), &kgo.Record{Value: []byte(failoverValue(i)), Partition: 0},
			func(_ *kgo.Record, err error) { results <- err })
		if i == failoverRecords/3 {
			// Records are still in flight: the kill hits mid-stream.
			c.kill9(t, leader)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 120*time.Second)
	defer cancel()
	if err := cl.Flush(ctx); err != nil {
		t.Fatalf("flush: %v", err)
	}
	for i := 0; i < failoverRecords; i++ {
		if err := <-results; err != nil {
			t.Fatalf("a record failed: %v", err)
		}
	}
	// Each node learns the new leader on its own time: ask until one says.
	waitFor(t, 30*time.Second, "a new leader in the metadata", func() error {
		if l := leaderOf(t, adm, topic); l == leader || l < 0 {
			return fmt.Errorf("leader %d (was %d)", l, leader)
		}
		return nil
	})
	readBack(t, c.Bootstrap, topic)
}

func TestClusterSaramaIdempotentProducerSurvivesTheLeadersKill9(t *testing.T) {
	c := startDevCluster(t)
	adm := kadm.NewClient(mustKgo(t, kgo.SeedBrokers(c.Bootstrap...)))
	defer adm.Close()
	topic := unique(t, "sarama-failover")
	leader := replicatedTopic(t, adm, topic)
	cfg := saramaConfig("sarama-failover")
	cfg.Producer.Idempotent = true
	cfg.Producer.RequiredAcks = sarama.WaitForAll
	cfg.Net.MaxOpenRequests = 1
	cfg.Producer.Retry.Max = 1000
	cfg.Producer.Retry.Backoff = 100 * time.Millisecond
	cfg.Producer.Return.Successes = true
	cfg.Producer.Partitioner = sarama.NewManualPartitioner
	cfg.Metadata.RefreshFrequency = time.Second
	prod, err := sarama.NewAsyncProducer(c.Bootstrap, cfg)
	if err != nil {
		t.Fatalf("sarama producer: %v", err)
	}
	done := make(chan error, 1)
	go func() {
		acked := 0
		for acked < failoverRecords {
			select {
			case <-prod.Successes():
				acked++
			case e := <-prod.Errors():
				done <- e.Err
				return
			case <-time.After(120 * time.Second):
				done <- fmt.Errorf("only %d of %d acknowledged", acked, failoverRecords)
				return
			}
		}
		done <- nil
	}()
	for i := 0; i < failoverRecords; i++ {
		prod.Input() <- &sarama.ProducerMessage{Topic: topic, Partition: 0, Value: sarama.StringEncoder(failoverValue(i))}
		if i == failoverRecords/3 {
			c.kill9(t, leader)
		}
	}
	if err := <-done; err != nil {
		t.Fatalf("sarama: %v", err)
	}
	if err := prod.Close(); err != nil {
		t.Fatalf("close: %v", err)
	}
	// Each node learns the new leader on its own time: ask until one says.
	waitFor(t, 30*time.Second, "a new leader in the metadata", func() error {
		if l := leaderOf(t, adm, topic); l == leader || l < 0 {
			return fmt.Errorf("leader %d (was %d)", l, leader)
		}
		return nil
	})
	readBack(t, c.Bootstrap, topic)
}
