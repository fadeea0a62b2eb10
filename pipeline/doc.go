// Package pipeline aggregates records on the device with event-time windows (tumbling,
// sliding, session), watermarks and late panes, per SPEC §4 (the Beam model).
package pipeline
