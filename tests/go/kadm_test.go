package felicego

// franz-go's admin client (kadm) against Felice.

import (
	"errors"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// advertises reports whether the broker lists the API key in ApiVersions.
func advertises(t *testing.T, adm *kadm.Client, key int16) bool {
	t.Helper()
	vs, err := adm.ApiVersions(testCtx(t, 10*time.Second))
	if err != nil {
		t.Fatalf("ApiVersions: %v", err)
	}
	found := false
	vs.Each(func(bv kadm.BrokerApiVersions) {
		if _, ok := bv.KeyMaxVersion(key); ok {
			found = true
		}
	})
	return found
}

// TestKadmTopics: CreateTopics, ListTopics (Metadata), BrokerMetadata and
// DeleteTopics through kadm. Why: kadm is what Go operators and tools use to
// manage topics; it relies on CreateTopics v5+ response fields (partition
// count, replication factor, topic id) and Metadata v10+ (topic ids, leader
// epochs). Asserts Kafka's answers: the created topic reports its partitions,
// RF 1 and a non-zero id that Metadata repeats; every partition is led by the
// single broker with replicas = ISR = [node]; creating it again is
// TOPIC_ALREADY_EXISTS; RF 3 on a one-broker cluster is
// INVALID_REPLICATION_FACTOR; a deleted topic leaves Metadata, and deleting it
// again is UNKNOWN_TOPIC_OR_PARTITION.
func TestKadmTopics(t *testing.T) {
	b := startBroker(t)
	kcl := newKgo(t, b)
	adm := kadm.NewClient(kcl)
	ctx := testCtx(t, 60*time.Second)
	t1, t2 := unique(t, "adm-a"), unique(t, "adm-b")

	created, err := adm.CreateTopics(ctx, 3, 1, nil, t1, t2)
	if err != nil {
		t.Fatalf("CreateTopics: %v", err)
	}
	ids := map[string]kadm.TopicID{}
	for _, topic := range []string{t1, t2} {
		r, ok := created[topic]
		if !ok {
			t.Fatalf("CreateTopics response lacks %s: %v", topic, created)
		}
		if r.Err != nil {
			t.Fatalf("CreateTopics %s: %v (%s)", topic, r.Err, r.ErrMessage)
		}
		if r.NumPartitions != 3 || r.ReplicationFactor != 1 {
			t.Errorf("CreateTopics %s: %d partitions, RF %d; want 3, 1", topic, r.NumPartitions, r.ReplicationFactor)
		}
		if r.ID == (kadm.TopicID{}) {
			t.Errorf("CreateTopics %s: zero topic id", topic)
		}
		ids[topic] = r.ID
	}

	again, err := adm.CreateTopic(ctx, 3, 1, nil, t1)
	if !errors.Is(err, kerr.TopicAlreadyExists) || !errors.Is(again.Err, kerr.TopicAlreadyExists) {
		t.Errorf("creating %s again: err %v / %v, want TOPIC_ALREADY_EXISTS", t1, err, again.Err)
	}
	badRF, err := adm.CreateTopic(ctx, 1, 3, nil, unique(t, "adm-rf3"))
	if !errors.Is(err, kerr.InvalidReplicationFactor) || !errors.Is(badRF.Err, kerr.InvalidReplicationFactor) {
		t.Errorf("RF 3 on one broker: err %v / %v, want INVALID_REPLICATION_FACTOR", err, badRF.Err)
	}

	md, err := adm.BrokerMetadata(ctx)
	if err != nil {
		t.Fatalf("BrokerMetadata: %v", err)
	}
	if len(md.Brokers) != 1 || md.Cluster == "" || md.Controller != md.Brokers[0].NodeID {
		t.Errorf("BrokerMetadata: brokers %v cluster %q controller %d; want one broker, a cluster id, that broker as controller",
			md.Brokers, md.Cluster, md.Controller)
	}
	node := md.Brokers[0].NodeID
	if got := fmt.Sprintf("%s:%d", md.Brokers[0].Host, md.Brokers[0].Port); got != b.Addr {
		t.Errorf("advertised broker %s, want the listener %s", got, b.Addr)
	}

	listed, err := adm.ListTopics(ctx)
	if err != nil {
		t.Fatalf("ListTopics: %v", err)
	}
	for _, topic := range []string{t1, t2} {
		td, ok := listed[topic]
		if !ok {
			t.Fatalf("ListTopics lacks %s (has %v)", topic, listed.Names())
		}
		if td.Err != nil || td.IsInternal || td.ID != ids[topic] || len(td.Partitions) != 3 {
			t.Errorf("ListTopics %s: err %v internal %v id %v (create said %v) partitions %d",
				topic, td.Err, td.IsInternal, td.ID, ids[topic], len(td.Partitions))
		}
		for _, p := range td.Partitions.Sorted() {
			if p.Err != nil || p.Leader != node || !slices.Equal(p.Replicas, []int32{node}) ||
				!slices.Equal(p.ISR, []int32{node}) || p.LeaderEpoch < 0 {
				t.Errorf("partition %s/%d: %+v; want leader = replicas = ISR = %d", topic, p.Partition, p, node)
			}
		}
	}
	for name := range listed {
		if name == "__consumer_offsets" {
			t.Errorf("ListTopics (without internal) lists __consumer_offsets")
		}
	}

	dels, err := adm.DeleteTopics(ctx, t2)
	if err != nil || dels[t2].Err != nil {
		t.Fatalf("DeleteTopics %s: %v / %v", t2, err, dels[t2].Err)
	}
	// kadm answers ListTopics from kgo's metadata cache (MetadataMinAge,
	// 5 s); purge the topic so the next ListTopics asks the broker.
	kcl.PurgeTopicsFromClient(t2)
	waitFor(t, 15*time.Second, "the deleted topic to leave Metadata", func() error {
		l, err := adm.ListTopics(ctx)
		if err != nil {
			return err
		}
		if l.Has(t2) {
			return fmt.Errorf("%s still listed", t2)
		}
		if !l.Has(t1) {
			return fmt.Errorf("%s vanished too", t1)
		}
		return nil
	})
	again2, err := adm.DeleteTopic(ctx, t2)
	if !errors.Is(err, kerr.UnknownTopicOrPartition) && !errors.Is(again2.Err, kerr.UnknownTopicOrPartition) {
		t.Errorf("deleting %s again: %v / %v, want UNKNOWN_TOPIC_OR_PARTITION", t2, err, again2.Err)
	}
}

// TestKadmListOffsets: ListStartOffsets, ListEndOffsets and
// ListOffsetsAfterMilli. Why: lag monitors and "seek to time" tools rely on
// ListOffsets with the special timestamps -2/-1 and real timestamps. Records
// with CreateTime t0, t0+1s, t0+2s go to partition 0: start 0, end 3; the
// first offset at or after t0+500ms is 1, at t0 it is 0, after every record
// kadm reports the end offset (Kafka answers -1, kadm re-asks for the end);
// the empty partition 1 has start = end = 0.
func TestKadmListOffsets(t *testing.T) {
	b := startBroker(t)
	adm := newAdmin(t, b)
	ctx := testCtx(t, 60*time.Second)
	topic := unique(t, "offs")
	createTopic(t, adm, topic, 2)

	prod := newKgo(t, b, kgo.RecordPartitioner(kgo.ManualPartitioner()))
	t0 := time.Now().Add(-time.Hour).Truncate(time.Millisecond)
	var recs []*kgo.Record
	for i := 0; i < 3; i++ {
		recs = append(recs, &kgo.Record{Topic: topic, Partition: 0, Value: []byte(fmt.Sprint(i)),
			Timestamp: t0.Add(time.Duration(i) * time.Second)})
	}
	if err := prod.ProduceSync(ctx, recs...).FirstErr(); err != nil {
		t.Fatalf("produce: %v", err)
	}

	check := func(what string, l kadm.ListedOffsets, err error, want map[int32]int64) {
		t.Helper()
		if err != nil {
			t.Fatalf("%s: %v", what, err)
		}
		if err := l.Error(); err != nil {
			t.Fatalf("%s: %v", what, err)
		}
		for p, w := range want {
			o, ok := l.Lookup(topic, p)
			if !ok || o.Offset != w {
				t.Errorf("%s partition %d: %+v (found %v), want offset %d", what, p, o, ok, w)
			}
		}
	}
	starts, err := adm.ListStartOffsets(ctx, topic)
	check("ListStartOffsets", starts, err, map[int32]int64{0: 0, 1: 0})
	ends, err := adm.ListEndOffsets(ctx, topic)
	check("ListEndOffsets", ends, err, map[int32]int64{0: 3, 1: 0})
	at0, err := adm.ListOffsetsAfterMilli(ctx, t0.UnixMilli(), topic)
	check("ListOffsetsAfterMilli(t0)", at0, err, map[int32]int64{0: 0})
	if o, _ := at0.Lookup(topic, 0); o.Timestamp != t0.UnixMilli() {
		t.Errorf("ListOffsetsAfterMilli(t0): timestamp %d, want the record's %d", o.Timestamp, t0.UnixMilli())
	}
	mid, err := adm.ListOffsetsAfterMilli(ctx, t0.Add(500*time.Millisecond).UnixMilli(), topic)
	check("ListOffsetsAfterMilli(t0+500ms)", mid, err, map[int32]int64{0: 1})
	if o, _ := mid.Lookup(topic, 0); o.Timestamp != t0.Add(time.Second).UnixMilli() {
		t.Errorf("ListOffsetsAfterMilli(t0+500ms): timestamp %d, want %d (record 1's)", o.Timestamp, t0.Add(time.Second).UnixMilli())
	}
	late, err := adm.ListOffsetsAfterMilli(ctx, t0.Add(time.Minute).UnixMilli(), topic)
	check("ListOffsetsAfterMilli(after all)", late, err, map[int32]int64{0: 3, 1: 0})

	// The raw answer for a timestamp after every record: offset -1,
	// timestamp -1, no error (what kadm turns into the end offset above).
	req := kmsg.NewPtrListOffsetsRequest()
	req.ReplicaID = -1
	rt := kmsg.NewListOffsetsRequestTopic()
	rt.Topic = topic
	rp := kmsg.NewListOffsetsRequestTopicPartition()
	rp.Partition = 0
	rp.Timestamp = t0.Add(time.Minute).UnixMilli()
	rt.Partitions = append(rt.Partitions, rp)
	req.Topics = append(req.Topics, rt)
	resp, err := req.RequestWith(ctx, newKgo(t, b))
	if err != nil {
		t.Fatalf("ListOffsets: %v", err)
	}
	if p := resp.Topics[0].Partitions[0]; p.ErrorCode != 0 || p.Offset != -1 || p.Timestamp != -1 {
		t.Errorf("ListOffsets for a timestamp after every record: error %d offset %d timestamp %d, want 0, -1, -1",
			p.ErrorCode, p.Offset, p.Timestamp)
	}

	// An unknown topic: kadm lists it under partition -1 with
	// UNKNOWN_TOPIC_OR_PARTITION.
	missing, err := adm.ListEndOffsets(ctx, "no-such-topic-"+topic)
	if err != nil {
		t.Fatalf("ListEndOffsets(unknown): %v", err)
	}
	if o, ok := missing.Lookup("no-such-topic-"+topic, -1); !ok || !errors.Is(o.Err, kerr.UnknownTopicOrPartition) {
		t.Errorf("ListEndOffsets(unknown topic): %+v (found %v), want UNKNOWN_TOPIC_OR_PARTITION", o, ok)
	}
}

// TestKadmGroups: CommitOffsets/FetchOffsets, ListGroups, DescribeGroups,
// DeleteOffsets (OffsetDelete), DeleteGroups and Lag, for a group that only
// commits (an admin "reset offsets") and for a live kgo consumer group. Why:
// this is what `kadm`-based tooling does to inspect and manage groups.
// Asserts: committed offsets come back with their metadata and leader epoch;
// the commit-only group is listed as Empty with no protocol type; the live
// group is Stable with protocol type consumer, one member with its client id
// and host and its assignment; deleting a group with a member is
// NON_EMPTY_GROUP, an unknown group GROUP_ID_NOT_FOUND; OffsetDelete removes
// one topic's offsets; a deleted group fetches no offsets and is not listed.
func TestKadmGroups(t *testing.T) {
	t.Parallel() // waits on the group's initial rebalance delay; it has its own broker
	b := startBroker(t)
	adm := newAdmin(t, b)
	ctx := testCtx(t, 90*time.Second)
	topic, other := unique(t, "g-topic"), unique(t, "g-other")
	createTopic(t, adm, topic, 3)
	createTopic(t, adm, other, 1)
	produceKeyed(t, b, topic, "r", 30)

	// A commit-only group.
	admGroup := unique(t, "adm-group")
	offs := kadm.Offsets{}
	offs.Add(kadm.Offset{Topic: topic, Partition: 0, At: 5, LeaderEpoch: 0, Metadata: "m0"})
	offs.Add(kadm.Offset{Topic: topic, Partition: 2, At: 7, LeaderEpoch: -1, Metadata: ""})
	offs.Add(kadm.Offset{Topic: other, Partition: 0, At: 0, LeaderEpoch: -1, Metadata: "other"})
	committed, err := adm.CommitOffsets(ctx, admGroup, offs)
	if err != nil {
		t.Fatalf("CommitOffsets: %v", err)
	}
	if err := committed.Error(); err != nil {
		t.Fatalf("CommitOffsets: %v", err)
	}
	fetched, err := adm.FetchOffsets(ctx, admGroup)
	if err != nil {
		t.Fatalf("FetchOffsets: %v", err)
	}
	if err := fetched.Error(); err != nil {
		t.Fatalf("FetchOffsets: %v", err)
	}
	offs.Each(func(o kadm.Offset) {
		got, ok := fetched.Lookup(o.Topic, o.Partition)
		if !ok || got.At != o.At || got.Metadata != o.Metadata || got.LeaderEpoch != o.LeaderEpoch {
			t.Errorf("FetchOffsets %s/%d: %+v (found %v), want at %d metadata %q epoch %d",
				o.Topic, o.Partition, got.Offset, ok, o.At, o.Metadata, o.LeaderEpoch)
		}
	})
	if _, ok := fetched.Lookup(topic, 1); ok {
		t.Errorf("FetchOffsets lists partition 1, which was never committed")
	}
	unknown, err := adm.FetchOffsets(ctx, unique(t, "never-used"))
	if err != nil || hasAny(unknown) {
		t.Errorf("FetchOffsets of an unknown group: %v / %v, want no offsets", unknown, err)
	}

	// A live group: one kgo consumer member.
	liveGroup := unique(t, "live-group")
	seen := newGroupSeen()
	member := startMember(t, b, "live", liveGroup, topic, seen, kgo.ClientID("live-client"), kgo.AutoCommitInterval(200*time.Millisecond))
	dg := waitGroupStable(t, adm, liveGroup, topic, 1, 3)
	if dg.ProtocolType != "consumer" || dg.Protocol != "cooperative-sticky" {
		t.Errorf("DescribeGroups: protocol %s/%s, want consumer/cooperative-sticky", dg.ProtocolType, dg.Protocol)
	}
	if dg.Coordinator.NodeID != 1 {
		t.Errorf("DescribeGroups: coordinator %+v, want node 1", dg.Coordinator)
	}
	m := dg.Members[0]
	if m.ClientID != "live-client" || m.ClientHost == "" || m.MemberID == "" {
		t.Errorf("DescribeGroups member: client id %q host %q member id %q", m.ClientID, m.ClientHost, m.MemberID)
	}
	if meta, ok := m.Join.AsConsumer(); !ok || !slices.Equal(meta.Topics, []string{topic}) {
		t.Errorf("DescribeGroups member metadata: %+v (consumer %v), want subscription [%s]", meta, ok, topic)
	}
	waitFor(t, 30*time.Second, "the live member to consume", func() error {
		if n := seen.total(); n != 30 {
			return fmt.Errorf("%d of 30", n)
		}
		return nil
	})
	// The member autocommits every 200 ms; this bounded wait for the
	// commit is what Lag reads below.
	waitFor(t, 20*time.Second, "the live member's autocommit", func() error {
		lag, err := adm.Lag(ctx, liveGroup)
		if err != nil {
			return err
		}
		l := lag[liveGroup]
		if l.Error() != nil {
			return l.Error()
		}
		if total := l.Lag.Total(); total != 0 {
			return fmt.Errorf("lag %d", total)
		}
		return nil
	})

	// OffsetDelete of a topic the live member is subscribed to is refused
	// per partition with GROUP_SUBSCRIBED_TO_TOPIC.
	od, err := adm.DeleteOffsets(ctx, liveGroup, kadm.TopicsSet{topic: {0: {}}})
	if err != nil {
		t.Errorf("DeleteOffsets(live group): %v", err)
	} else if perr := od[topic][0]; !errors.Is(perr, kerr.GroupSubscribedToTopic) {
		t.Errorf("DeleteOffsets of a subscribed topic in a live group: %v, want GROUP_SUBSCRIBED_TO_TOPIC", perr)
	}

	listed, err := adm.ListGroups(ctx)
	if err != nil {
		t.Fatalf("ListGroups: %v", err)
	}
	if g, ok := listed[liveGroup]; ok && g.GroupType != "classic" {
		t.Errorf("ListGroups %s: group type %q, want classic (ListGroups v5)", liveGroup, g.GroupType)
	}
	classic, err := adm.ListGroupsByType(ctx, []string{"classic"})
	if err != nil || !hasGroup(classic, liveGroup) || !hasGroup(classic, admGroup) {
		t.Errorf("ListGroupsByType(classic): %v / %v, want both groups", classic.Groups(), err)
	}
	consumerType, err := adm.ListGroupsByType(ctx, []string{"consumer"})
	if err != nil || hasGroup(consumerType, liveGroup) || hasGroup(consumerType, admGroup) {
		t.Errorf("ListGroupsByType(consumer): %v / %v, want neither classic group", consumerType.Groups(), err)
	}
	// DescribeGroups v6 of a group that does not exist: GROUP_ID_NOT_FOUND
	// (Kafka 4.0+, KIP-1043), state Dead.
	nx := unique(t, "nx-group")
	dnx, err := adm.DescribeGroups(ctx, nx)
	if err != nil || !errors.Is(dnx[nx].Err, kerr.GroupIDNotFound) || dnx[nx].State != "Dead" {
		t.Errorf("DescribeGroups(unknown group): %+v / %v, want GROUP_ID_NOT_FOUND, state Dead", dnx[nx], err)
	}
	if g, ok := listed[admGroup]; !ok || g.State != "Empty" || g.ProtocolType != "" || g.Coordinator != 1 {
		t.Errorf("ListGroups %s: %+v (found %v), want state Empty, no protocol type, coordinator 1", admGroup, g, ok)
	}
	if g, ok := listed[liveGroup]; !ok || g.State != "Stable" || g.ProtocolType != "consumer" {
		t.Errorf("ListGroups %s: %+v (found %v), want state Stable, protocol type consumer", liveGroup, g, ok)
	}
	stable, err := adm.ListGroups(ctx, "Stable")
	if err != nil {
		t.Fatalf("ListGroups(Stable): %v", err)
	}
	if _, ok := stable[admGroup]; ok || !hasGroup(stable, liveGroup) {
		t.Errorf("ListGroups(Stable): %v, want the live group only", stable.Groups())
	}
	empty, err := adm.DescribeGroups(ctx, admGroup)
	if err != nil || empty[admGroup].Err != nil || empty[admGroup].State != "Empty" || len(empty[admGroup].Members) != 0 {
		t.Errorf("DescribeGroups %s: %+v / %v, want Empty with no members", admGroup, empty[admGroup], err)
	}

	// Deleting a group with a member fails; an unknown group is not found.
	dels, err := adm.DeleteGroups(ctx, liveGroup)
	if err != nil || !errors.Is(dels[liveGroup].Err, kerr.NonEmptyGroup) {
		t.Errorf("DeleteGroups(live group): %+v / %v, want NON_EMPTY_GROUP", dels[liveGroup], err)
	}
	missing := unique(t, "no-such-group")
	dels, err = adm.DeleteGroups(ctx, missing)
	if err != nil || !errors.Is(dels[missing].Err, kerr.GroupIDNotFound) {
		t.Errorf("DeleteGroups(unknown group): %+v / %v, want GROUP_ID_NOT_FOUND", dels[missing], err)
	}
	member.close(t)

	// OffsetDelete of one topic in the empty group.
	od, err = adm.DeleteOffsets(ctx, admGroup, kadm.TopicsSet{other: {0: {}}})
	if err != nil || od.Error() != nil {
		t.Errorf("DeleteOffsets: %v / %v", err, od.Error())
	}
	fetched, err = adm.FetchOffsets(ctx, admGroup)
	if err != nil {
		t.Fatalf("FetchOffsets after DeleteOffsets: %v", err)
	}
	if _, ok := fetched.Lookup(other, 0); ok {
		t.Errorf("FetchOffsets still has %s/0 after DeleteOffsets", other)
	}
	if _, ok := fetched.Lookup(topic, 0); !ok {
		t.Errorf("DeleteOffsets of %s also removed %s/0", other, topic)
	}

	// DeleteGroups of both groups, now empty.
	dels, err = adm.DeleteGroups(ctx, admGroup, liveGroup)
	if err != nil || dels.Error() != nil {
		t.Fatalf("DeleteGroups: %v / %v", err, dels.Error())
	}
	listed, err = adm.ListGroups(ctx)
	if err != nil {
		t.Fatalf("ListGroups: %v", err)
	}
	if _, ok := listed[admGroup]; ok {
		t.Errorf("ListGroups still lists deleted group %s", admGroup)
	}
	if _, ok := listed[liveGroup]; ok {
		t.Errorf("ListGroups still lists deleted group %s", liveGroup)
	}
	fetched, err = adm.FetchOffsets(ctx, admGroup)
	if err != nil || hasAny(fetched) {
		t.Errorf("FetchOffsets of a deleted group: %v / %v, want none", fetched, err)
	}
}

func hasGroup(l kadm.ListedGroups, g string) bool {
	_, ok := l[g]
	return ok
}

func hasAny(o kadm.OffsetResponses) bool {
	n := 0
	o.Each(func(r kadm.OffsetResponse) {
		if r.At >= 0 {
			n++
		}
	})
	return n > 0
}

// errBrokerTooOldText is kgo's unexported errBrokerTooOld: what a request
// returns when the broker's ApiVersions does not list its key.
const errBrokerTooOldText = "broker is too old; the broker has already indicated it will not know how to handle the request"

// TestKadmDescribeConfigs: DescribeTopicConfigs and DescribeBrokerConfigs
// answer as Kafka's do (retention.ms of a topic, num.partitions of the
// broker). The first branch is for a broker without DescribeConfigs (key
// 32): kgo's (unexported) errBrokerTooOld, the request never sent, wrapped
// in kadm's *ShardErrors with AllFailed.
func TestKadmDescribeConfigs(t *testing.T) {
	b := startBroker(t)
	adm := newAdmin(t, b)
	ctx := testCtx(t, 30*time.Second)
	topic := unique(t, "cfg")
	createTopic(t, adm, topic, 1)

	topicCfg, topicErr := adm.DescribeTopicConfigs(ctx, topic)
	brokerCfg, brokerErr := adm.DescribeBrokerConfigs(ctx, 1)
	if !advertises(t, adm, 32) {
		for what, err := range map[string]error{"DescribeTopicConfigs": topicErr, "DescribeBrokerConfigs": brokerErr} {
			var se *kadm.ShardErrors
			if !errors.As(err, &se) || !se.AllFailed || len(se.Errs) != 1 || se.Errs[0].Err == nil || se.Errs[0].Err.Error() != errBrokerTooOldText {
				t.Errorf("%s without DescribeConfigs: got %v (%T), want *kadm.ShardErrors{AllFailed, [%q]}", what, err, err, errBrokerTooOldText)
			} else if se.Name != "DescribeConfigs" {
				t.Errorf("%s: shard errors for %q, want DescribeConfigs", what, se.Name)
			}
		}
		return
	}
	// Turns green when DescribeConfigs lands: Kafka's answers.
	if topicErr != nil {
		t.Fatalf("DescribeTopicConfigs: %v", topicErr)
	}
	rc, err := topicCfg.On(topic, nil)
	if err != nil || rc.Err != nil {
		t.Fatalf("DescribeTopicConfigs %s: %v / %v", topic, err, rc.Err)
	}
	found := false
	for _, c := range rc.Configs {
		if c.Key == "retention.ms" && c.Value != nil && *c.Value == "604800000" {
			found = true
		}
	}
	if !found {
		t.Errorf("DescribeTopicConfigs %s: no retention.ms=604800000 in %v", topic, rc.Configs)
	}
	if brokerErr != nil {
		t.Fatalf("DescribeBrokerConfigs: %v", brokerErr)
	}
	brc, err := brokerCfg.On("1", nil)
	if err != nil || brc.Err != nil {
		t.Fatalf("DescribeBrokerConfigs 1: %v / %v", err, brc.Err)
	}
	found = false
	for _, c := range brc.Configs {
		if c.Key == "num.partitions" && c.Value != nil && *c.Value == "1" {
			found = true
		}
	}
	if !found {
		t.Errorf("DescribeBrokerConfigs 1: no num.partitions=1 in %d configs", len(brc.Configs))
	}
}

// TestKadmDescribeProducers: DescribeProducers after an idempotent kgo
// producer wrote to partition 0. Why: `kafka-transactions describe-producers`
// and kadm use it to find stuck producers; it must report the producer id and
// epoch that InitProducerId handed out, the last sequence (records - 1 for a
// producer's first batches on a partition), a last timestamp, coordinator
// epoch -1 and no open transaction (current txn start offset -1). Partition 1
// (never written) has no active producers.
func TestKadmDescribeProducers(t *testing.T) {
	b := startBroker(t)
	adm := newAdmin(t, b)
	ctx := testCtx(t, 30*time.Second)
	topic := unique(t, "prods")
	createTopic(t, adm, topic, 2)

	prod := newKgo(t, b, kgo.RecordPartitioner(kgo.ManualPartitioner()))
	var recs []*kgo.Record
	for i := 0; i < 10; i++ {
		recs = append(recs, &kgo.Record{Topic: topic, Partition: 0, Value: []byte(fmt.Sprint(i))})
	}
	results := prod.ProduceSync(ctx, recs...)
	if err := results.FirstErr(); err != nil {
		t.Fatalf("produce: %v", err)
	}
	pid, epoch := recs[0].ProducerID, recs[0].ProducerEpoch

	described, err := adm.DescribeProducers(ctx, kadm.TopicsSet{topic: {0: {}, 1: {}}})
	if err != nil {
		t.Fatalf("DescribeProducers: %v", err)
	}
	p0, ok := described[topic].Partitions[0]
	if !ok || p0.Err != nil {
		t.Fatalf("DescribeProducers %s/0: %+v (found %v)", topic, p0, ok)
	}
	dp, ok := p0.ActiveProducers[pid]
	if !ok || len(p0.ActiveProducers) != 1 {
		t.Fatalf("DescribeProducers %s/0: active producers %+v, want exactly producer %d", topic, p0.ActiveProducers, pid)
	}
	if dp.ProducerEpoch != epoch || dp.LastSequence != 9 || dp.CoordinatorEpoch != -1 ||
		dp.CurrentTxnStartOffset != -1 || dp.LastTimestamp <= 0 || dp.Leader != 1 {
		t.Errorf("DescribeProducers %s/0: %+v; want epoch %d, last sequence 9, coordinator epoch -1, txn start -1, a timestamp, leader 1",
			topic, dp, epoch)
	}
	p1, ok := described[topic].Partitions[1]
	if !ok || p1.Err != nil || len(p1.ActiveProducers) != 0 {
		t.Errorf("DescribeProducers %s/1: %+v (found %v), want no producers", topic, p1, ok)
	}
}
