package broker

import (
	"context"
	"log/slog"
)

// quietHandler wraps mochi's logger: mochi logs every client socket error (a device that
// drops its connection, a shutdown) as a warning with an empty message. Those are routine on
// a LAN of cheap devices; they go to debug so the journal keeps what matters. So do the
// refusals in mochiDemoted.
type quietHandler struct{ slog.Handler }

// mochiDemoted are mochi log messages about refusals that edgegate already counts and logs
// itself (rate-limited, see Refusals): mochi logs each at Error with the whole packet.
var mochiDemoted = map[string]bool{
	"publish packet error":    true,
	"publish packet rejected": true,
}

func (h quietHandler) Handle(ctx context.Context, r slog.Record) error {
	empty := r.Message == "" && r.Level == slog.LevelWarn
	if empty || mochiDemoted[r.Message] {
		if !h.Handler.Enabled(ctx, slog.LevelDebug) {
			return nil
		}
		r.Level = slog.LevelDebug
		if empty {
			r.Message = "client connection error"
		}
	}
	return h.Handler.Handle(ctx, r)
}

func (h quietHandler) WithAttrs(as []slog.Attr) slog.Handler {
	return quietHandler{h.Handler.WithAttrs(as)}
}

func (h quietHandler) WithGroup(name string) slog.Handler {
	return quietHandler{h.Handler.WithGroup(name)}
}
