package felicego

// IBM Sarama against Felice: SyncProducer (idempotent and not), the
// partition consumer, and a ConsumerGroup with a handler.

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/IBM/sarama"
	"github.com/twmb/franz-go/pkg/kadm"
)

// saramaVersion is the protocol level Sarama is told the broker speaks: the
// reference Kafka's release line (4.1).
var saramaVersion = sarama.V4_1_0_0

func saramaConfig(clientID string) *sarama.Config {
	cfg := sarama.NewConfig()
	cfg.Version = saramaVersion
	cfg.ClientID = clientID
	cfg.Metadata.Retry.Backoff = 100 * time.Millisecond
	return cfg
}

func newSaramaClient(t *testing.T, b *Broker, cfg *sarama.Config) sarama.Client {
	t.Helper()
	cl, err := sarama.NewClient([]string{b.Addr}, cfg)
	if err != nil {
		t.Fatalf("sarama.NewClient: %v", err)
	}
	t.Cleanup(func() { _ = cl.Close() })
	return cl
}

// saramaRoundTrip sends n keyed messages with headers through a SyncProducer
// made from cfg (SendMessages, one call) and reads them back with Sarama's
// partition consumer, comparing key, value, headers and (partition, offset).
func saramaRoundTrip(t *testing.T, b *Broker, cfg *sarama.Config, partitions int32, n int) {
	t.Helper()
	adm := newAdmin(t, b)
	topic := unique(t, "sarama")
	createTopic(t, adm, topic, partitions)

	cfg.Producer.Return.Successes = true
	prod, err := sarama.NewSyncProducer([]string{b.Addr}, cfg)
	if err != nil {
		t.Fatalf("NewSyncProducer: %v", err)
	}
	defer prod.Close()

	var msgs []*sarama.ProducerMessage
	for i := 0; i < n; i++ {
		msgs = append(msgs, &sarama.ProducerMessage{
			Topic: topic,
			Key:   sarama.StringEncoder(fmt.Sprintf("key-%d", i%17)),
			Value: sarama.StringEncoder(fmt.Sprintf("value-%d", i)),
			Headers: []sarama.RecordHeader{
				{Key: []byte("i"), Value: []byte(fmt.Sprint(i))},
				{Key: []byte("client"), Value: []byte("sarama")},
			},
		})
	}
	if err := prod.SendMessages(msgs); err != nil {
		var pes sarama.ProducerErrors
		if errors.As(err, &pes) && len(pes) > 0 {
			t.Fatalf("SendMessages: %d failed, first: %v", len(pes), pes[0].Err)
		}
		t.Fatalf("SendMessages: %v", err)
	}
	// One more with SendMessage: its offset follows on its partition.
	last := &sarama.ProducerMessage{Topic: topic, Key: sarama.StringEncoder("key-0"), Value: sarama.StringEncoder("last")}
	lp, lo, err := prod.SendMessage(last)
	if err != nil {
		t.Fatalf("SendMessage: %v", err)
	}
	msgs = append(msgs, last)

	byPos := map[recKey]*sarama.ProducerMessage{}
	perPart := map[int32]int64{}
	for _, m := range msgs {
		k := recKey{m.Partition, m.Offset}
		if byPos[k] != nil {
			t.Fatalf("two messages acknowledged at %v", k)
		}
		byPos[k] = m
		perPart[m.Partition]++
	}
	if lo != perPart[lp]-1 {
		t.Errorf("SendMessage after the batch: offset %d on partition %d, want %d", lo, lp, perPart[lp]-1)
	}
	if len(perPart) < 2 {
		t.Errorf("messages landed on %d partitions, want several", len(perPart))
	}

	ccfg := saramaConfig("sarama-consumer")
	ccfg.Version = cfg.Version
	cl := newSaramaClient(t, b, ccfg)
	cons, err := sarama.NewConsumerFromClient(cl)
	if err != nil {
		t.Fatalf("NewConsumer: %v", err)
	}
	defer cons.Close()
	// All partition consumers first: Sarama fetches for them together.
	pcs := map[int32]sarama.PartitionConsumer{}
	for p := int32(0); p < partitions; p++ {
		if perPart[p] == 0 {
			continue
		}
		pc, err := cons.ConsumePartition(topic, p, sarama.OffsetOldest)
		if err != nil {
			t.Fatalf("ConsumePartition %d: %v", p, err)
		}
		defer pc.AsyncClose()
		pcs[p] = pc
	}
	for p := int32(0); p < partitions; p++ {
		newest, err := cl.GetOffset(topic, p, sarama.OffsetNewest)
		if err != nil || newest != perPart[p] {
			t.Errorf("GetOffset(newest) %d: %d (%v), want %d", p, newest, err, perPart[p])
		}
		oldest, err := cl.GetOffset(topic, p, sarama.OffsetOldest)
		if err != nil || oldest != 0 {
			t.Errorf("GetOffset(oldest) %d: %d (%v), want 0", p, oldest, err)
		}
		pc := pcs[p]
		if pc == nil {
			continue
		}
		timeout := time.After(30 * time.Second)
		for off := int64(0); off < perPart[p]; off++ {
			select {
			case m := <-pc.Messages():
				want := byPos[recKey{p, m.Offset}]
				if m.Offset != off || want == nil {
					t.Fatalf("partition %d: message at offset %d, want %d", p, m.Offset, off)
				}
				wk, _ := want.Key.Encode()
				wv, _ := want.Value.Encode()
				if string(m.Key) != string(wk) || string(m.Value) != string(wv) {
					t.Errorf("%d/%d: %q=%q, want %q=%q", p, off, m.Key, m.Value, wk, wv)
				}
				if len(m.Headers) != len(want.Headers) {
					t.Errorf("%d/%d: %d headers, want %d", p, off, len(m.Headers), len(want.Headers))
				} else {
					for i, h := range m.Headers {
						if string(h.Key) != string(want.Headers[i].Key) || string(h.Value) != string(want.Headers[i].Value) {
							t.Errorf("%d/%d: header %d %q=%q, want %q=%q", p, off, i, h.Key, h.Value, want.Headers[i].Key, want.Headers[i].Value)
						}
					}
				}
			case err := <-pc.Errors():
				t.Fatalf("partition %d: %v", p, err)
			case <-timeout:
				t.Fatalf("partition %d: only %d of %d messages within 30s", p, off, perPart[p])
			}
		}
	}
}

// TestSaramaSyncProducer: Sarama's SyncProducer, keyed messages with
// headers to 4 partitions, read back with the partition consumer; once with
// Version 4.1 and once with Sarama's default Version (2.8.0, what an
// application that sets no Version speaks). Two configurations: idempotent (Idempotent=true, acks=all,
// MaxOpenRequests=1, as Sarama requires; it calls InitProducerId and sends
// sequence numbers), and plain (acks=1, gzip, no idempotence). Why: Sarama is
// the other widely used Go client, with its own request builders (Produce v7+
// record batches, Fetch v11+, ListOffsets for GetOffset). Asserts every
// message is acknowledged once at a distinct offset, offsets are contiguous
// from 0 per partition, GetOffset(oldest/newest) agree, and the consumer reads
// back the same keys, values and headers.
func TestSaramaSyncProducer(t *testing.T) {
	for _, v := range []sarama.KafkaVersion{saramaVersion, sarama.DefaultVersion} {
		t.Run("idempotent-"+v.String(), func(t *testing.T) {
			b := startBroker(t)
			cfg := saramaConfig("sarama-idempotent")
			cfg.Version = v
			cfg.Producer.Idempotent = true
			cfg.Producer.RequiredAcks = sarama.WaitForAll
			cfg.Net.MaxOpenRequests = 1
			cfg.Producer.Retry.Max = 5
			saramaRoundTrip(t, b, cfg, 4, 300)
		})
		t.Run("plain-gzip-acks1-"+v.String(), func(t *testing.T) {
			b := startBroker(t)
			cfg := saramaConfig("sarama-plain")
			cfg.Version = v
			cfg.Producer.RequiredAcks = sarama.WaitForLocal
			cfg.Producer.Compression = sarama.CompressionGZIP
			saramaRoundTrip(t, b, cfg, 4, 300)
		})
	}
}

// saramaHandler records what one group member consumed and marks each
// message (Sarama's auto-commit then commits the marks).
type saramaHandler struct {
	name  string
	seen  *groupSeen
	setup chan struct{}
	once  sync.Once
}

func (h *saramaHandler) Setup(sarama.ConsumerGroupSession) error {
	h.once.Do(func() { close(h.setup) })
	return nil
}
func (h *saramaHandler) Cleanup(sarama.ConsumerGroupSession) error { return nil }
func (h *saramaHandler) ConsumeClaim(sess sarama.ConsumerGroupSession, claim sarama.ConsumerGroupClaim) error {
	for {
		select {
		case m, ok := <-claim.Messages():
			if !ok {
				return nil
			}
			h.seen.mu.Lock()
			k := recKey{m.Partition, m.Offset}
			h.seen.count[k]++
			h.seen.member[k] = h.name
			h.seen.values[k] = string(m.Value)
			h.seen.mu.Unlock()
			sess.MarkMessage(m, "")
		case <-sess.Context().Done():
			return nil
		}
	}
}

// saramaMember runs one sarama.ConsumerGroup's Consume loop in a goroutine.
type saramaMember struct {
	cg     sarama.ConsumerGroup
	cancel context.CancelFunc
	done   chan struct{}
	errs   chan error
}

func startSaramaMember(t *testing.T, b *Broker, name, group, topic string, seen *groupSeen) *saramaMember {
	t.Helper()
	cfg := saramaConfig("sarama-" + name)
	cfg.Consumer.Offsets.Initial = sarama.OffsetOldest
	cfg.Consumer.Offsets.AutoCommit.Interval = 200 * time.Millisecond
	cfg.Consumer.Group.Heartbeat.Interval = 300 * time.Millisecond
	cfg.Consumer.Return.Errors = true
	cg, err := sarama.NewConsumerGroup([]string{b.Addr}, group, cfg)
	if err != nil {
		t.Fatalf("NewConsumerGroup: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	m := &saramaMember{cg: cg, cancel: cancel, done: make(chan struct{}), errs: make(chan error, 100)}
	h := &saramaHandler{name: name, seen: seen, setup: make(chan struct{})}
	go func() {
		for err := range cg.Errors() {
			select {
			case m.errs <- err:
			default:
			}
		}
	}()
	go func() {
		defer close(m.done)
		for ctx.Err() == nil {
			// Consume returns at each rebalance; call it again.
			if err := cg.Consume(ctx, []string{topic}, h); err != nil {
				if errors.Is(err, sarama.ErrClosedConsumerGroup) || ctx.Err() != nil {
					return
				}
				select {
				case m.errs <- fmt.Errorf("%s: Consume: %w", name, err):
				default:
				}
				select {
				case <-ctx.Done():
				case <-time.After(100 * time.Millisecond): // back off before retrying
				}
			}
		}
	}()
	return m
}

// close ends the Consume loop and closes the group (Sarama commits the marked
// offsets and leaves the group).
func (m *saramaMember) close(t *testing.T) {
	t.Helper()
	m.cancel()
	select {
	case <-m.done:
	case <-time.After(30 * time.Second):
		t.Fatalf("sarama Consume did not return within 30s of its context ending")
	}
	if err := m.cg.Close(); err != nil {
		t.Errorf("ConsumerGroup.Close: %v", err)
	}
	close(m.errs)
	for err := range m.errs {
		t.Errorf("consumer group error: %v", err)
	}
}

// TestSaramaConsumerGroup: two sarama.ConsumerGroup members (range strategy,
// Sarama's default) with a handler that marks every message. Why: Sarama's
// group client is its own implementation of the classic protocol (JoinGroup
// v9 with member id required, SyncGroup, Heartbeat, OffsetCommit v8,
// OffsetFetch). Asserts: the group becomes Stable with both members; every
// message produced after that is consumed exactly once; after the members
// close, the group's committed offsets equal the end offsets; a new member of
// the group then consumes only messages produced after the commits.
func TestSaramaConsumerGroup(t *testing.T) {
	if testing.Short() {
		t.Skip("slow: group rebalances (run without -short)")
	}
	t.Parallel() // mostly waiting on group timers; it has its own broker
	const partitions, first, second = 4, 400, 100
	b := startBroker(t)
	adm := newAdmin(t, b)
	topic, group := unique(t, "sarama-grp-topic"), unique(t, "sarama-grp")
	createTopic(t, adm, topic, partitions)

	seen := newGroupSeen()
	m1 := startSaramaMember(t, b, "s1", group, topic, seen)
	m2 := startSaramaMember(t, b, "s2", group, topic, seen)
	dg := waitGroupStable(t, adm, group, topic, 2, partitions)
	if dg.Protocol != "range" || dg.ProtocolType != "consumer" {
		t.Errorf("group protocol %s/%s, want consumer/range", dg.ProtocolType, dg.Protocol)
	}

	produceKeyed(t, b, topic, "first", first)
	waitFor(t, 60*time.Second, "the sarama members to consume the first batch", func() error {
		if n := seen.total(); n != first {
			return fmt.Errorf("%d of %d", n, first)
		}
		return nil
	})
	seen.mu.Lock()
	members := map[string]bool{}
	for k, c := range seen.count {
		if c != 1 {
			t.Errorf("message %v consumed %d times", k, c)
		}
		members[seen.member[k]] = true
	}
	seen.mu.Unlock()
	if !members["s1"] || !members["s2"] {
		t.Errorf("members that consumed: %v, want both", members)
	}
	m1.close(t)
	m2.close(t)

	ends, err := adm.ListEndOffsets(testCtx(t, 10*time.Second), topic)
	if err != nil {
		t.Fatalf("ListEndOffsets: %v", err)
	}
	committed, err := adm.FetchOffsets(testCtx(t, 10*time.Second), group)
	if err != nil {
		t.Fatalf("FetchOffsets: %v", err)
	}
	ends.Each(func(o kadm.ListedOffset) {
		c, ok := committed.Lookup(topic, o.Partition)
		if !ok || c.Err != nil || c.At != o.Offset {
			t.Errorf("partition %d: committed %+v (found %v), want %d", o.Partition, c.Offset, ok, o.Offset)
		}
	})

	produceKeyed(t, b, topic, "second", second)
	seen2 := newGroupSeen()
	m3 := startSaramaMember(t, b, "s3", group, topic, seen2)
	waitFor(t, 60*time.Second, "the new member to consume the second batch", func() error {
		if n := seen2.total(); n < second {
			return fmt.Errorf("%d of %d", n, second)
		}
		return nil
	})
	m3.close(t)
	seen2.mu.Lock()
	defer seen2.mu.Unlock()
	if len(seen2.count) != second {
		t.Errorf("new member consumed %d messages, want the %d new ones", len(seen2.count), second)
	}
	for k, v := range seen2.values {
		if len(v) < 7 || v[:7] != "second-" {
			t.Errorf("new member re-read committed message %v=%s", k, v)
		}
	}
}
