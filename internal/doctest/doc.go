// Package doctest checks the documentation against the code: every relative link and anchor
// of README.md and docs/ resolves, the Grafana dashboard and the alert rules query only
// documented metrics, and the README tour and the docs' walkthroughs work as written
// (`make tour-test` runs their marked commands against real daemons).
package doctest
