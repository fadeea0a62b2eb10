package conformance

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"

	"github.com/edgegate/edgegate/cloud/beam/winspec"
	"github.com/edgegate/edgegate/cloud/beam/wire"
)

// Case is one comparison: a pipeline spec and its records in arrival order.
type Case struct {
	Name    string
	Spec    winspec.Spec
	Records []Reading
}

// Config is the edgegate config of c: its pipeline over every device reading, idle and
// early off (replay applies neither).
func (c *Case) Config() string {
	var b strings.Builder
	b.WriteString(`gateway: {id: gw-conformance, data_dir: /nonexistent}
broker: {allow_anonymous: true}
routes:
  - topic: "devices/+device/+metric"
    series: "{device}/{metric}"
pipelines:
  - name: ` + c.Name + `
    input: "devices/+/+"
    idle: 0s
    early: 0s
`)
	for _, l := range strings.Split(strings.TrimSpace(c.Spec.YAML()), "\n") {
		b.WriteString("    " + l + "\n")
	}
	return b.String()
}

// Input is c's records as SPEC §3.1 JSON Lines, in arrival order.
func (c *Case) Input() []byte {
	var b bytes.Buffer
	for i, r := range c.Records {
		fmt.Fprintf(&b, `{"id":"r-%d","topic":"devices/%s","series":%q,"ts":%q,"value":%s}`+"\n",
			i, r.Series, r.Series, wire.FormatTime(r.TS), wire.FormatFloat(r.Value))
	}
	return b.Bytes()
}

// Replay runs `edgegate replay` (the binary bin) over c in dir and returns its panes in
// emission order.
func Replay(bin, dir string, c *Case) ([]wire.Pane, error) {
	cfg := filepath.Join(dir, c.Name+".yaml")
	in := filepath.Join(dir, c.Name+".jsonl")
	if err := os.WriteFile(cfg, []byte(c.Config()), 0o644); err != nil {
		return nil, err
	}
	if err := os.WriteFile(in, c.Input(), 0o644); err != nil {
		return nil, err
	}
	cmd := exec.Command(bin, "replay", "-c", cfg, "--input", in)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return nil, fmt.Errorf("edgegate replay %s: %w: %s", c.Name, err, stderr.Bytes())
	}
	var ps []wire.Pane
	sc := bufio.NewScanner(bytes.NewReader(out))
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		p, err := wire.DecodePane(sc.Bytes())
		if err != nil {
			return nil, fmt.Errorf("edgegate replay %s: %w", c.Name, err)
		}
		ps = append(ps, *p)
	}
	return ps, sc.Err()
}
