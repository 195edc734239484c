package felicego

// franz-go (kgo) against Felice: the default producer and the group consumer.

import (
	"context"
	"errors"
	"fmt"
	"net"
	"slices"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
)

// newKgo is a kgo client seeded with the broker, closed when the test ends.
func newKgo(tb testing.TB, b *Broker, opts ...kgo.Opt) *kgo.Client {
	tb.Helper()
	opts = append([]kgo.Opt{kgo.SeedBrokers(b.Addr), kgo.ClientID("felice-go-test")}, opts...)
	cl, err := kgo.NewClient(opts...)
	if err != nil {
		tb.Fatalf("kgo.NewClient: %v", err)
	}
	tb.Cleanup(cl.Close)
	return cl
}

// newAdmin is a kadm client over its own kgo client.
func newAdmin(tb testing.TB, b *Broker) *kadm.Client {
	return kadm.NewClient(newKgo(tb, b))
}

// createTopic creates a topic with the given partition count (replication
// factor 1) and fails the test on any error.
func createTopic(tb testing.TB, adm *kadm.Client, topic string, partitions int32) {
	tb.Helper()
	resp, err := adm.CreateTopic(testCtx(tb, 15*time.Second), partitions, 1, nil, topic)
	if err != nil {
		tb.Fatalf("CreateTopic %s: %v", topic, err)
	}
	if resp.Err != nil {
		tb.Fatalf("CreateTopic %s: %v (%s)", topic, resp.Err, resp.ErrMessage)
	}
}

// recKey identifies a record by partition and offset.
type recKey struct {
	Partition int32
	Offset    int64
}

// consumeN reads records with a direct (group-less) consumer until it has n
// of them or ctx ends; it fails the test if fewer than n arrive.
func consumeN(tb testing.TB, cl *kgo.Client, n int, timeout time.Duration) []*kgo.Record {
	tb.Helper()
	ctx := testCtx(tb, timeout)
	var out []*kgo.Record
	for len(out) < n {
		fetches := cl.PollFetches(ctx)
		if ctx.Err() != nil {
			tb.Fatalf("consumed %d of %d records before the %s bound", len(out), n, timeout)
		}
		fetches.EachError(func(topic string, p int32, err error) {
			tb.Errorf("fetch error %s/%d: %v", topic, p, err)
		})
		out = append(out, fetches.Records()...)
	}
	return out
}

func headersEqual(a, b []kgo.RecordHeader) bool {
	return slices.EqualFunc(a, b, func(x, y kgo.RecordHeader) bool {
		return x.Key == y.Key && string(x.Value) == string(y.Value)
	})
}

// TestKgoProduceConsumeAllCodecs: kgo's default producer (idempotent,
// acks=all) writes keyed records with headers to a 4-partition topic, once per
// compression codec (none, gzip, snappy, lz4, zstd); a direct consumer reads
// them back, and so does a read_committed one. Why: this is what a franz-go application does out of the box,
// and it exercises InitProducerId, idempotent Produce v9+ batches with every
// codec, and Fetch with topic ids. Each fetched record must equal what was
// produced (key, value, headers, timestamp, partition, offset), offsets must
// be contiguous from 0 per partition, the batch must keep the producer's codec
// (compression.type=producer) and carry the producer id/epoch.
func TestKgoProduceConsumeAllCodecs(t *testing.T) {
	b := startBroker(t)
	adm := newAdmin(t, b)
	codecs := []struct {
		name  string
		codec kgo.CompressionCodec
		attr  uint8 // the record batch's compression attribute
	}{
		{"none", kgo.NoCompression(), 0},
		{"gzip", kgo.GzipCompression(), 1},
		{"snappy", kgo.SnappyCompression(), 2},
		{"lz4", kgo.Lz4Compression(), 3},
		{"zstd", kgo.ZstdCompression(), 4},
	}
	const perCodec = 400
	for _, c := range codecs {
		t.Run(c.name, func(t *testing.T) {
			topic := unique(t, "codec")
			createTopic(t, adm, topic, 4)
			prod := newKgo(t, b, kgo.ProducerBatchCompression(c.codec), kgo.DefaultProduceTopic(topic))

			// Compressible values (a codec only applies when it shrinks
			// the batch), 40 distinct keys spread over the partitions.
			var recs []*kgo.Record
			for i := 0; i < perCodec; i++ {
				recs = append(recs, &kgo.Record{
					Key:   []byte(fmt.Sprintf("key-%02d", i%40)),
					Value: []byte(fmt.Sprintf("value %d %s", i, strings.Repeat("felice ", 20+i%7))),
					Headers: []kgo.RecordHeader{
						{Key: "seq", Value: []byte(fmt.Sprint(i))},
						{Key: "codec", Value: []byte(c.name)},
						{Key: "empty", Value: nil},
					},
				})
			}
			if err := prod.ProduceSync(testCtx(t, 30*time.Second), recs...).FirstErr(); err != nil {
				t.Fatalf("ProduceSync: %v", err)
			}
			byPos := map[recKey]*kgo.Record{}
			keyPart := map[string]int32{}
			for _, r := range recs {
				if r.ProducerID < 0 || r.ProducerEpoch < 0 {
					t.Fatalf("produced without a producer id (id %d epoch %d): the default producer is idempotent", r.ProducerID, r.ProducerEpoch)
				}
				byPos[recKey{r.Partition, r.Offset}] = r
				if p, ok := keyPart[string(r.Key)]; ok && p != r.Partition {
					t.Errorf("key %s went to partitions %d and %d", r.Key, p, r.Partition)
				}
				keyPart[string(r.Key)] = r.Partition
			}
			if len(byPos) != perCodec {
				t.Fatalf("%d distinct (partition, offset) pairs for %d records", len(byPos), perCodec)
			}
			parts := map[int32]int{}
			for _, r := range recs {
				parts[r.Partition]++
			}
			if len(parts) < 3 {
				t.Errorf("records landed on %d partitions (%v), want at least 3 of 4", len(parts), parts)
			}
			for p, n := range parts {
				for off := int64(0); off < int64(n); off++ {
					if byPos[recKey{p, off}] == nil {
						t.Errorf("partition %d: offsets not contiguous from 0 (no record at %d of %d)", p, off, n)
						break
					}
				}
			}

			cons := newKgo(t, b, kgo.ConsumeTopics(topic), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
			got := consumeN(t, cons, perCodec, 30*time.Second)
			if len(got) != perCodec {
				t.Fatalf("consumed %d records, want %d", len(got), perCodec)
			}
			seen := map[recKey]bool{}
			for _, r := range got {
				k := recKey{r.Partition, r.Offset}
				if seen[k] {
					t.Errorf("record %v fetched twice", k)
				}
				seen[k] = true
				want := byPos[k]
				if want == nil {
					t.Errorf("fetched a record at %v that was never produced", k)
					continue
				}
				if string(r.Key) != string(want.Key) || string(r.Value) != string(want.Value) {
					t.Errorf("%v: key/value %q/%q, want %q/%q", k, r.Key, r.Value, want.Key, want.Value)
				}
				if !headersEqual(r.Headers, want.Headers) {
					t.Errorf("%v: headers %v, want %v", k, r.Headers, want.Headers)
				}
				if r.Timestamp.UnixMilli() != want.Timestamp.UnixMilli() {
					t.Errorf("%v: timestamp %v, want %v", k, r.Timestamp, want.Timestamp)
				}
				if r.Attrs.TimestampType() != 0 {
					t.Errorf("%v: timestamp type %d, want 0 (CreateTime)", k, r.Attrs.TimestampType())
				}
				if r.Attrs.CompressionType() != c.attr {
					t.Errorf("%v: batch compression %d, want %d (%s)", k, r.Attrs.CompressionType(), c.attr, c.name)
				}
				if r.ProducerID != want.ProducerID || r.ProducerEpoch != want.ProducerEpoch {
					t.Errorf("%v: producer id/epoch %d/%d, want %d/%d", k, r.ProducerID, r.ProducerEpoch, want.ProducerID, want.ProducerEpoch)
				}
				if r.Attrs.IsTransactional() || r.Attrs.IsControl() {
					t.Errorf("%v: transactional/control bit set", k)
				}
			}

			// read_committed (what transactional pipelines use): with no
			// transactions the last stable offset is the high watermark,
			// so the same records come back.
			rc := newKgo(t, b, kgo.ConsumeTopics(topic), kgo.FetchIsolationLevel(kgo.ReadCommitted()),
				kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
			if got := consumeN(t, rc, perCodec, 30*time.Second); len(got) != perCodec {
				t.Errorf("read_committed consumer got %d records, want %d", len(got), perCodec)
			}
			lso, err := adm.ListCommittedOffsets(testCtx(t, 10*time.Second), topic)
			if err != nil {
				t.Fatalf("ListCommittedOffsets: %v", err)
			}
			lso.Each(func(o kadm.ListedOffset) {
				if o.Err != nil || o.Offset != int64(parts[o.Partition]) {
					t.Errorf("last stable offset %d: %d (%v), want %d", o.Partition, o.Offset, o.Err, parts[o.Partition])
				}
			})

			// The end offsets agree with what was produced.
			ends, err := adm.ListEndOffsets(testCtx(t, 10*time.Second), topic)
			if err != nil {
				t.Fatalf("ListEndOffsets: %v", err)
			}
			ends.Each(func(o kadm.ListedOffset) {
				if o.Err != nil || o.Offset != int64(parts[o.Partition]) {
					t.Errorf("end offset %d: %d (%v), want %d", o.Partition, o.Offset, o.Err, parts[o.Partition])
				}
			})
		})
	}
}

// groupMember is one kgo group consumer running its poll loop in a goroutine.
type groupMember struct {
	name string
	cl   *kgo.Client
	stop context.CancelFunc
	done chan struct{}
}

// groupSeen collects what the members of a group consumed.
type groupSeen struct {
	mu     sync.Mutex
	count  map[recKey]int
	member map[recKey]string
	values map[recKey]string
	errs   []error
}

func newGroupSeen() *groupSeen {
	return &groupSeen{count: map[recKey]int{}, member: map[recKey]string{}, values: map[recKey]string{}}
}

func (s *groupSeen) total() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.count)
}

// startMember starts a group member polling the topic; records go to seen.
func startMember(t *testing.T, b *Broker, name, group, topic string, seen *groupSeen, opts ...kgo.Opt) *groupMember {
	t.Helper()
	base := []kgo.Opt{
		kgo.ConsumerGroup(group),
		kgo.ConsumeTopics(topic),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()),
		// A short heartbeat so a rebalance is noticed quickly; the session
		// timeout stays kgo's default (45 s).
		kgo.HeartbeatInterval(300 * time.Millisecond),
	}
	cl := newKgo(t, b, append(base, opts...)...)
	ctx, cancel := context.WithCancel(context.Background())
	m := &groupMember{name: name, cl: cl, stop: cancel, done: make(chan struct{})}
	go func() {
		defer close(m.done)
		for {
			fetches := cl.PollFetches(ctx)
			if ctx.Err() != nil || fetches.IsClientClosed() {
				return
			}
			seen.mu.Lock()
			fetches.EachError(func(topic string, p int32, err error) {
				if !errors.Is(err, context.Canceled) {
					seen.errs = append(seen.errs, fmt.Errorf("%s: fetch %s/%d: %w", name, topic, p, err))
				}
			})
			fetches.EachRecord(func(r *kgo.Record) {
				k := recKey{r.Partition, r.Offset}
				seen.count[k]++
				seen.member[k] = name
				seen.values[k] = string(r.Value)
			})
			seen.mu.Unlock()
		}
	}()
	return m
}

// close stops the poll loop, then closes the client: kgo's Close leaves the
// group, and its default revoke commits what was polled.
func (m *groupMember) close(t *testing.T) {
	t.Helper()
	m.stop()
	select {
	case <-m.done:
	case <-time.After(30 * time.Second):
		t.Fatalf("member %s: poll loop did not stop within 30s", m.name)
	}
	closed := make(chan struct{})
	go func() { m.cl.Close(); close(closed) }()
	select {
	case <-closed:
	case <-time.After(30 * time.Second):
		t.Fatalf("member %s: Close (LeaveGroup + commit) did not return within 30s", m.name)
	}
}

// waitGroupStable waits until DescribeGroups shows the group Stable with n
// members whose assignments cover all of the topic's partitions once.
func waitGroupStable(t *testing.T, adm *kadm.Client, group, topic string, n int, partitions int32) kadm.DescribedGroup {
	t.Helper()
	var dg kadm.DescribedGroup
	waitFor(t, 45*time.Second, fmt.Sprintf("group %s stable with %d members", group, n), func() error {
		groups, err := adm.DescribeGroups(testCtx(t, 5*time.Second), group)
		if err != nil {
			return err
		}
		dg = groups[group]
		if dg.Err != nil {
			return dg.Err
		}
		if dg.State != "Stable" || len(dg.Members) != n {
			return fmt.Errorf("state %s with %d members", dg.State, len(dg.Members))
		}
		owned := map[int32]int{}
		for _, m := range dg.Members {
			ca, ok := m.Assigned.AsConsumer()
			if !ok {
				return fmt.Errorf("member %s: assignment is not a consumer assignment", m.MemberID)
			}
			for _, tp := range ca.Topics {
				if tp.Topic != topic {
					return fmt.Errorf("member %s assigned foreign topic %s", m.MemberID, tp.Topic)
				}
				for _, p := range tp.Partitions {
					owned[p]++
				}
			}
		}
		for p := int32(0); p < partitions; p++ {
			if owned[p] != 1 {
				return fmt.Errorf("partition %d owned by %d members (%v)", p, owned[p], owned)
			}
		}
		return nil
	})
	return dg
}

// produceKeyed writes n keyed records (value "<tag>-<i>") with the default
// producer and returns the end offset per partition afterwards.
func produceKeyed(t *testing.T, b *Broker, topic, tag string, n int) {
	t.Helper()
	prod := newKgo(t, b, kgo.DefaultProduceTopic(topic))
	var recs []*kgo.Record
	for i := 0; i < n; i++ {
		recs = append(recs, &kgo.Record{Key: []byte(fmt.Sprintf("k%d", i)), Value: []byte(fmt.Sprintf("%s-%d", tag, i))})
	}
	if err := prod.ProduceSync(testCtx(t, 30*time.Second), recs...).FirstErr(); err != nil {
		t.Fatalf("produce %s: %v", tag, err)
	}
	prod.Close()
}

// TestKgoConsumerGroup: two kgo.ConsumerGroup members share a 6-partition
// topic, once with kgo's default balancer (cooperative-sticky) and once with
// the eager range balancer. Why: this is the whole classic group protocol as a
// franz-go application drives it (FindCoordinator, JoinGroup/SyncGroup with
// the member's own protocol metadata, Heartbeat, OffsetCommit on revoke,
// LeaveGroup on close, OffsetFetch on the next join). Asserts: the group
// becomes Stable with both members owning disjoint halves; every record is
// consumed exactly once, each by the member that owns its partition; after the
// members close, the committed offsets equal the end offsets; a restarted
// member of the same group reads only the records produced after that (it
// resumes at the commits), and those commits survive a broker restart.
func TestKgoConsumerGroup(t *testing.T) {
	if testing.Short() {
		t.Skip("slow: group rebalances (run without -short)")
	}
	for _, bal := range []struct {
		name     string
		balancer kgo.GroupBalancer // nil: kgo's default (cooperative-sticky)
		protocol string
	}{
		{"cooperative-sticky-default", nil, "cooperative-sticky"},
		{"range", kgo.RangeBalancer(), "range"},
	} {
		t.Run(bal.name, func(t *testing.T) {
			t.Parallel()
			const partitions, first, second = 6, 600, 300
			b := startBroker(t)
			adm := newAdmin(t, b)
			topic, group := unique(t, "grp-topic"), unique(t, "grp")
			createTopic(t, adm, topic, partitions)
			var opts []kgo.Opt
			if bal.balancer != nil {
				opts = append(opts, kgo.Balancers(bal.balancer))
			}

			phase := time.Now()
			logPhase := func(what string) {
				t.Logf("%s after %s", what, time.Since(phase).Round(time.Millisecond))
				phase = time.Now()
			}
			seen := newGroupSeen()
			m1 := startMember(t, b, "m1", group, topic, seen, opts...)
			m2 := startMember(t, b, "m2", group, topic, seen, opts...)
			dg := waitGroupStable(t, adm, group, topic, 2, partitions)
			if dg.Protocol != bal.protocol || dg.ProtocolType != "consumer" {
				t.Errorf("group protocol %s/%s, want consumer/%s", dg.ProtocolType, dg.Protocol, bal.protocol)
			}
			logPhase("two members stable")

			produceKeyed(t, b, topic, "first", first)
			waitFor(t, 60*time.Second, "both members to consume the first batch", func() error {
				if n := seen.total(); n != first {
					return fmt.Errorf("%d of %d records", n, first)
				}
				return nil
			})
			logPhase("first batch consumed")

			// Exactly once, and partitions split between the members.
			seen.mu.Lock()
			owner := map[int32]string{}
			for k, c := range seen.count {
				if c != 1 {
					t.Errorf("record %v consumed %d times", k, c)
				}
				if o, ok := owner[k.Partition]; ok && o != seen.member[k] {
					t.Errorf("partition %d consumed by both %s and %s", k.Partition, o, seen.member[k])
				}
				owner[k.Partition] = seen.member[k]
			}
			perMember := map[string]int{}
			for _, m := range owner {
				perMember[m]++
			}
			for _, err := range seen.errs {
				t.Errorf("%v", err)
			}
			seen.mu.Unlock()
			if perMember["m1"] == 0 || perMember["m2"] == 0 {
				t.Errorf("partitions per member %v: both members should own some", perMember)
			}

			m1.close(t)
			m2.close(t)
			logPhase("members closed")

			// The commits made on leave equal the end offsets.
			ends, err := adm.ListEndOffsets(testCtx(t, 10*time.Second), topic)
			if err != nil {
				t.Fatalf("ListEndOffsets: %v", err)
			}
			checkCommitted := func(when string) {
				t.Helper()
				committed, err := adm.FetchOffsets(testCtx(t, 10*time.Second), group)
				if err != nil {
					t.Fatalf("FetchOffsets (%s): %v", when, err)
				}
				ends.Each(func(o kadm.ListedOffset) {
					c, ok := committed.Lookup(topic, o.Partition)
					if !ok || c.Err != nil || c.At != o.Offset {
						t.Errorf("%s: partition %d committed %+v (found %v), want %d", when, o.Partition, c.Offset, ok, o.Offset)
					}
				})
			}
			checkCommitted("after the members closed")
			groups, err := adm.DescribeGroups(testCtx(t, 5*time.Second), group)
			if err != nil || groups[group].State != "Empty" {
				t.Errorf("group after both members left: state %q err %v, want Empty", groups[group].State, err)
			}

			// Commits survive a broker restart.
			b.Restart()
			checkCommitted("after a broker restart")

			// A restarted member resumes at the commits: it sees only the
			// second batch.
			produceKeyed(t, b, topic, "second", second)
			seen2 := newGroupSeen()
			m3 := startMember(t, b, "m3", group, topic, seen2, opts...)
			waitFor(t, 60*time.Second, "the restarted member to consume the second batch", func() error {
				if n := seen2.total(); n < second {
					return fmt.Errorf("%d of %d records", n, second)
				}
				return nil
			})
			logPhase("restarted member consumed the second batch")
			m3.close(t)
			seen2.mu.Lock()
			defer seen2.mu.Unlock()
			if len(seen2.count) != second {
				t.Errorf("restarted member consumed %d records, want exactly the %d new ones", len(seen2.count), second)
			}
			var old []string
			for k, v := range seen2.values {
				if !strings.HasPrefix(v, "second-") {
					old = append(old, fmt.Sprintf("%v=%s", k, v))
				}
				if seen2.count[k] != 1 {
					t.Errorf("restarted member consumed %v %d times", k, seen2.count[k])
				}
			}
			sort.Strings(old)
			if len(old) > 0 {
				t.Errorf("restarted member re-read %d already committed records, e.g. %v", len(old), old[:min(5, len(old))])
			}
		})
	}
}

// TestKgoAutoCreateTopic: producing to a topic that does not exist. kgo asks
// Metadata with allow_auto_topic_creation=false unless AllowAutoTopicCreation
// is set. Why: Kafka creates a topic on Metadata only when both the broker
// (auto.create.topics.enable, true by default) and the request allow it;
// applications depend on both halves. Asserts: without the option the produce
// fails with UNKNOWN_TOPIC_OR_PARTITION and the topic is not created; with it
// the record lands at offset 0 of a new topic with num.partitions (1)
// partitions.
func TestKgoAutoCreateTopic(t *testing.T) {
	b := startBroker(t)
	kcl := newKgo(t, b)
	adm := kadm.NewClient(kcl)
	ctx := testCtx(t, 30*time.Second)

	denied := unique(t, "no-autocreate")
	noAuto := newKgo(t, b, kgo.UnknownTopicRetries(2))
	err := noAuto.ProduceSync(ctx, &kgo.Record{Topic: denied, Value: []byte("x")}).FirstErr()
	if !errors.Is(err, kerr.UnknownTopicOrPartition) {
		t.Errorf("produce to a missing topic without auto-creation: %v, want UNKNOWN_TOPIC_OR_PARTITION", err)
	}
	if l, err := adm.ListTopics(ctx); err != nil || l.Has(denied) {
		t.Errorf("topic %s exists (%v) after a Metadata request that did not allow auto-creation", denied, err)
	}

	allowed := unique(t, "autocreate")
	auto := newKgo(t, b, kgo.AllowAutoTopicCreation())
	r := &kgo.Record{Topic: allowed, Value: []byte("y")}
	if err := auto.ProduceSync(ctx, r).FirstErr(); err != nil {
		t.Fatalf("produce with auto-creation: %v", err)
	}
	if r.Partition != 0 || r.Offset != 0 {
		t.Errorf("auto-created topic: record at %d/%d, want 0/0", r.Partition, r.Offset)
	}
	kcl.PurgeTopicsFromClient(allowed)
	l, err := adm.ListTopics(ctx, allowed)
	if err != nil || !l.Has(allowed) || len(l[allowed].Partitions) != 1 {
		t.Errorf("auto-created topic %s: %+v (%v), want 1 partition (num.partitions)", allowed, l[allowed], err)
	}
}

// cutDialer lets a test sever a client from the broker, as if its host
// vanished: Cut closes every connection it made and refuses new ones.
type cutDialer struct {
	mu    sync.Mutex
	cut   bool
	conns []net.Conn
}

func (d *cutDialer) DialContext(ctx context.Context, network, host string) (net.Conn, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.cut {
		return nil, errors.New("cutDialer: cut")
	}
	c, err := (&net.Dialer{}).DialContext(ctx, network, host)
	if err == nil {
		d.conns = append(d.conns, c)
	}
	return c, err
}

func (d *cutDialer) Cut() {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.cut = true
	for _, c := range d.conns {
		_ = c.Close()
	}
}

// TestKgoGroupSessionTimeout: a member that stops heartbeating without
// leaving (its connections cut) is expired by the coordinator after its
// session timeout (6 s, the broker minimum group.min.session.timeout.ms), and
// the group rebalances to the surviving member, which then owns every
// partition and consumes the records produced afterwards. Why: crash
// recovery of consumer groups depends on the coordinator's session expiry;
// a coordinator that never expires members leaves partitions unconsumed.
func TestKgoGroupSessionTimeout(t *testing.T) {
	if testing.Short() {
		t.Skip("slow: waits for a session timeout (run without -short)")
	}
	t.Parallel() // mostly waiting on the session timer; it has its own broker
	const partitions, n = 4, 200
	const session = 6 * time.Second
	b := startBroker(t)
	adm := newAdmin(t, b)
	topic, group := unique(t, "st-topic"), unique(t, "st-group")
	createTopic(t, adm, topic, partitions)

	seen := newGroupSeen()
	survivor := startMember(t, b, "survivor", group, topic, seen, kgo.SessionTimeout(session))
	d := &cutDialer{}
	victim := startMember(t, b, "victim", group, topic, newGroupSeen(), kgo.SessionTimeout(session),
		kgo.Dialer(d.DialContext), kgo.RetryTimeout(2*time.Second), kgo.RequestRetries(1))
	waitGroupStable(t, adm, group, topic, 2, partitions)

	d.Cut()
	cutAt := time.Now()
	waitGroupStable(t, adm, group, topic, 1, partitions)
	expiredAfter := time.Since(cutAt)
	t.Logf("the cut member was expired and the group rebalanced %s after the cut", expiredAfter.Round(time.Millisecond))
	if expiredAfter < session/2 {
		t.Errorf("the cut member was gone after %s, well before its %s session timeout", expiredAfter, session)
	}

	produceKeyed(t, b, topic, "after", n)
	waitFor(t, 30*time.Second, "the survivor to consume every record", func() error {
		if got := seen.total(); got != n {
			return fmt.Errorf("%d of %d", got, n)
		}
		return nil
	})
	survivor.close(t)
	// The cut member cannot reach the broker; end its loop without waiting
	// on a LeaveGroup that cannot be sent.
	victim.stop()
	go victim.cl.Close()
}
