package topic

import "strings"

// Covers reports whether every topic that filter matches is also matched by grant: the test
// of an ACL grant against a requested subscription (a topic name is a filter without
// wildcards, so it works for publishes too). Both must be valid filters. The answer errs on
// the safe side: when in doubt (e.g. grant "+/#" against filter "#", which match the same
// topics) it is false.
func Covers(grant, filter string) bool {
	if strings.HasPrefix(filter, "$") && (strings.HasPrefix(grant, "+") || strings.HasPrefix(grant, "#")) {
		return false // a leading wildcard never matches a '$' topic
	}
	for {
		g, grest, gmore := strings.Cut(grant, "/")
		if g == "#" {
			return true // matches the parent level and everything below
		}
		f, frest, fmore := strings.Cut(filter, "/")
		switch {
		case f == "#":
			return false // filter matches the parent level and anything below; only '#' covers that
		case g == "+":
		case f == "+" || f != g:
			return false
		}
		if !gmore || !fmore {
			if !gmore && !fmore {
				return true
			}
			// The filter continues past the grant: not covered. The grant continues past the
			// filter: covered only by a trailing "#" ("a/#" matches "a").
			return !fmore && grest == "#"
		}
		grant, filter = grest, frest
	}
}
