package ingest

import "fmt"

// Reason says why a message was refused; it labels metrics and maps to an MQTT 5 code.
type Reason string

// Refusal reasons of a PUBLISH (SPEC §2).
const (
	ReasonMalformed     Reason = "malformed"      // payload invalid for its route's format
	ReasonTooLarge      Reason = "too_large"      // packet over broker.max_packet_bytes
	ReasonOverQuota     Reason = "over_quota"     // a broker-wide cap (retained messages)
	ReasonBufferFull    Reason = "buffer_full"    // disk budget reached with on_full: reject
	ReasonNotAuthorized Reason = "not_authorized" // the client's ACL denies the topic
	ReasonTopicInvalid  Reason = "topic_invalid"  // topic over max_topic_bytes or max_topic_levels
	ReasonStore         Reason = "store_error"
	ReasonShutdown      Reason = "shutting_down"
)

// Code is the MQTT 5 reason code sent in the PUBACK (or PUBREC) of a refused message.
// too_large has no PUBACK code: a packet over the limit closes the connection before it is
// read, as MQTT 5 §3.1.2.11.4 asks (0x95 is a DISCONNECT code).
func (r Reason) Code() byte {
	switch r {
	case ReasonMalformed:
		return 0x99 // payload format invalid
	case ReasonTooLarge:
		return 0x95 // packet too large
	case ReasonOverQuota, ReasonBufferFull:
		return 0x97 // quota exceeded
	case ReasonNotAuthorized:
		return 0x87 // not authorized
	case ReasonTopicInvalid:
		return 0x90 // topic name invalid
	default:
		return 0x80 // unspecified error
	}
}

// Permanent reports whether resending the same message cannot succeed: it is malformed for
// its route, too large, outside the client's grants, on an invalid topic, or over a
// broker-wide cap that does not drain by itself (retained topics). A permanent refusal is
// acknowledged (an MQTT 5 client gets the reason code, a 3.1.1 client a plain PUBACK) and the
// message is kept in the refused log (SPEC §2): withholding the PUBACK would fill a 3.1.1
// client's in-flight window for good. The others (buffer full, store error, shutting down)
// are transient: no PUBACK, and a 3.1.1 client is disconnected so it resends later.
func (r Reason) Permanent() bool {
	switch r {
	case ReasonMalformed, ReasonTooLarge, ReasonNotAuthorized, ReasonTopicInvalid, ReasonOverQuota:
		return true
	}
	return false
}

// Error is a refusal with its reason.
type Error struct {
	Reason Reason
	Err    error
}

func (e *Error) Error() string { return fmt.Sprintf("%s: %v", e.Reason, e.Err) }
func (e *Error) Unwrap() error { return e.Err }

func malformed(format string, args ...any) error {
	return &Error{Reason: ReasonMalformed, Err: fmt.Errorf(format, args...)}
}
