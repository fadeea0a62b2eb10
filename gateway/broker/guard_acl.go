// The guard's grants: subscriptions, deliveries, publishes and retained messages, checked
// against the users' topic grants and the topic and retained limits.

package broker

import (
	"fmt"
	"strings"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"

	"github.com/edgegate/edgegate/gateway/config"
	"github.com/edgegate/edgegate/gateway/ingest"
	"github.com/edgegate/edgegate/internal/topic"
)

// OnACLCheck allows a subscription, or the delivery of a message on a topic, covered by a
// subscribe grant (default deny). Publishes pass here and are checked in OnPublish: mochi
// v2.7.9 disconnects a 3.1.1 client whose QoS 1/2 publish this hook denies, where SPEC §2
// wants no PUBACK and the connection kept.
func (g *guard) OnACLCheck(cl *mqtt.Client, tp string, write bool) bool {
	s := g.session(cl)
	if s == nil || tp == "" {
		return false
	}
	if write {
		return true
	}
	if !covered(s.subscribe, shareFilter(tp)) {
		return false
	}
	// A delivery (or a subscription being checked): the subscriber's queue must have room.
	return s.subscribing.Load() || g.queues.room(cl.ID)
}

// OnSubscribe refuses the filters that are too long or deep, outside the subscribe grants,
// or over max_subscriptions_per_client, by replacing them with an invalid filter.
func (g *guard) OnSubscribe(cl *mqtt.Client, pk packets.Packet) packets.Packet {
	s := g.session(cl)
	if s == nil || cl.Net.Inline {
		return pk
	}
	s.subscribing.Store(true) // until OnSubscribed: mochi checks the filters with OnACLCheck
	s.pendingSub = make([]ingest.Reason, len(pk.Filters))
	count := cl.State.Subscriptions.Len()
	for i, sub := range pk.Filters {
		f := shareFilter(sub.Filter)
		var err error
		switch {
		case topic.ValidFilter(f) != nil:
			continue // mochi refuses it itself
		case g.topicOK(f) != nil:
			s.pendingSub[i], err = ingest.ReasonTopicInvalid, g.topicOK(f)
		case !covered(s.subscribe, f):
			s.pendingSub[i], err = ingest.ReasonNotAuthorized, fmt.Errorf("subscription outside the grants of %s", userName(s.user))
		default:
			if _, exists := cl.State.Subscriptions.Get(sub.Filter); exists {
				continue
			}
			if count >= g.cfg.MaxSubscriptionsPerClient {
				s.pendingSub[i], err = ReasonSubscription, fmt.Errorf("max_subscriptions_per_client (%d) reached", g.cfg.MaxSubscriptionsPerClient)
				break
			}
			count++
		}
		if s.pendingSub[i] != "" {
			g.refusals.Add(s.pendingSub[i], cl.ID, sub.Filter, err)
			pk.Filters[i].Filter = refusedFilter
		}
	}
	return pk
}

// OnSubscribed puts the true reason of each refused filter into the SUBACK of an MQTT 5
// client (3.1.1 has only "failure", 0x80, which mochi already set). It relies on mochi
// v2.7.9 passing the SUBACK's own reason code slice; TestSubscribeReasonCodes checks it.
func (g *guard) OnSubscribed(cl *mqtt.Client, pk packets.Packet, codes []byte) {
	s := g.session(cl)
	if s == nil {
		return
	}
	s.subscribing.Store(false)
	if s.pendingSub == nil {
		return
	}
	if cl.Properties.ProtocolVersion == 5 {
		for i, r := range s.pendingSub {
			if r == "" || i >= len(codes) {
				continue
			}
			switch r {
			case ingest.ReasonTopicInvalid:
				codes[i] = packets.ErrTopicFilterInvalid.Code
			case ReasonSubscription:
				codes[i] = packets.ErrQuotaExceeded.Code
			default:
				codes[i] = packets.ErrNotAuthorized.Code
			}
		}
	}
	s.pendingSub = nil
}

// invalidTopicStandIn replaces a topic name mochi would drop silently until OnPublish
// refuses the publish (never delivered: the guard refuses it first).
const invalidTopicStandIn = "edgegate/invalid-topic"

// OnPublish refuses, before the ingest hook sees them, publishes outside the client's
// grants (default deny), on topics too long or deep, and retained messages over the
// retained quotas (overall and per user).
func (g *guard) OnPublish(cl *mqtt.Client, pk packets.Packet) (packets.Packet, error) {
	if cl.Net.Inline {
		return pk, nil
	}
	s := g.session(cl)
	if s == nil {
		return pk, g.refuse(cl, pk, ingest.ReasonNotAuthorized, fmt.Errorf("no session"))
	}
	if s.invalidTopic != "" {
		pk.TopicName, s.invalidTopic = s.invalidTopic, ""
		return pk, g.refuse(cl, pk, ingest.ReasonTopicInvalid, fmt.Errorf("topic %q: no client may publish to $SYS/... or to a name with + or #", pk.TopicName))
	}
	if !covered(s.publish, pk.TopicName) {
		return pk, g.refuse(cl, pk, ingest.ReasonNotAuthorized, fmt.Errorf("publish outside the grants of %s", userName(s.user)))
	}
	if err := g.topicOK(pk.TopicName); err != nil {
		return pk, g.refuse(cl, pk, ingest.ReasonTopicInvalid, err)
	}
	if pk.FixedHeader.Retain && len(pk.Payload) > 0 {
		undo, err := g.retained.reserve(s.user, pk.TopicName, int64(len(pk.Payload)))
		if err != nil {
			return pk, g.refuse(cl, pk, ingest.ReasonOverQuota, err)
		}
		s.retainUndo = undo // until OnRetainMessage, or undone by OnPacketProcessed
	}
	return pk, nil
}

// OnRetainMessage keeps the reservation of a retained publish mochi retained, or forgets
// the retained message an empty payload cleared.
func (g *guard) OnRetainMessage(cl *mqtt.Client, pk packets.Packet, r int64) {
	if len(pk.Payload) == 0 {
		g.retained.clear(pk.TopicName)
		return
	}
	if s := g.session(cl); s != nil && !cl.Net.Inline {
		s.retainUndo = nil
	}
}

// OnPacketProcessed undoes the reservation of a retained publish that was refused after
// the guard let it pass (by the ingest hook: malformed, buffer full...).
func (g *guard) OnPacketProcessed(cl *mqtt.Client, pk packets.Packet, err error) {
	if pk.FixedHeader.Type != packets.Publish || cl.Net.Inline {
		return
	}
	if s := g.session(cl); s != nil && s.retainUndo != nil {
		s.retainUndo()
		s.retainUndo = nil
	}
}

// OnRetainedExpired forgets a retained message mochi expired.
func (g *guard) OnRetainedExpired(topic string) { g.retained.clear(topic) }

// topicOK applies max_topic_bytes and max_topic_levels to a topic name or filter.
func (g *guard) topicOK(t string) error {
	if len(t) > g.cfg.MaxTopicBytes {
		return fmt.Errorf("topic of %d bytes is over max_topic_bytes (%d)", len(t), g.cfg.MaxTopicBytes)
	}
	if n := strings.Count(t, "/") + 1; n > g.cfg.MaxTopicLevels {
		return fmt.Errorf("topic of %d levels is over max_topic_levels (%d)", n, g.cfg.MaxTopicLevels)
	}
	return nil
}

// covered reports whether one of the grants covers the topic name or filter.
func covered(grants []string, t string) bool {
	if t == "" {
		return false
	}
	for _, g := range grants {
		if topic.Covers(g, t) {
			return true
		}
	}
	return false
}

// expand substitutes the identity into grant filters (both checked by OnConnect).
func expand(grants []string, user, clientID string) []string {
	out := make([]string, len(grants))
	for i, g := range grants {
		out[i] = config.ExpandGrant(g, user, clientID)
	}
	return out
}

// shareFilter strips the "$share/<group>/" of a shared subscription: grants apply to the
// topics it delivers.
func shareFilter(f string) string {
	if rest, ok := strings.CutPrefix(f, "$share/"); ok {
		if _, inner, ok := strings.Cut(rest, "/"); ok {
			return inner
		}
	}
	return f
}

func userName(u string) string {
	if u == "" {
		return "anonymous clients"
	}
	return "user " + u
}
