// Package soak is edgegate's randomized fault soak (`make soak`, `make soak-short`): a
// child daemon with a small disk budget, a short retention, pipelines and two uplinks,
// against devices of every kind and upstreams that flap, stall and refuse, killed (-9) and
// stopped (SIGTERM) at random moments, while the attacks of issue 21 (attacks_test.go) hit
// its broker. It records every PUBACK on the wire and everything that arrives upstream,
// then checks the promise of SPEC §5 reading by reading. The code is in the test files; a
// failing run prints the seed that replays its schedule.
package soak
