// Command edgegate is the IoT edge gateway daemon and its tools (SPEC §1).
package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"runtime"
	"runtime/debug"
	"strconv"

	"github.com/edgegate/edgegate/gateway/config"
	"github.com/edgegate/edgegate/internal/conf"
	"github.com/edgegate/edgegate/internal/preflight"
)

// Set by the linker (see Makefile).
var (
	version = "dev"
	commit  = ""
	// buildEpoch is the unix time of the commit built (see Makefile): a wall clock that
	// reads earlier is certainly wrong.
	buildEpoch = ""
)

const defaultConfig = "/etc/edgegate/edgegate.yaml"

// Exit codes (SPEC §1).
const (
	exitOK    = 0
	exitUser  = 1 // bad config, bad input file, runtime failure
	exitUsage = 2
)

func main() {
	os.Exit(run(os.Args[1:], os.Stdin, os.Stdout, os.Stderr))
}

const usage = `usage: edgegate <command> [flags]

commands:
  run -c FILE        run the gateway daemon (default FILE ` + defaultConfig + `)
  validate -c FILE [--offline]
                     check a config file and explain every problem, and that the
                     files and hardware it names are there (--offline: not those)
  replay -c FILE [--pipeline NAME] [--input F.jsonl]
                     run the config's pipelines over records (JSON Lines; stdin by
                     default), watermark to +inf at the end; panes to stdout
  buffer stats -d DIR / buffer tail -d DIR [-n N]
                     inspect a stopped daemon's buffer
  passwd             read a password from stdin, print its bcrypt hash for broker.users
  version            print version, commit, Go version and platform
`

func run(args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	if strconv.IntSize != 64 {
		// Badger loses keys or panics on 32-bit targets (SPEC §6).
		fmt.Fprintln(stderr, "edgegate: 32-bit platforms are not supported (Badger v4 loses data there); use a 64-bit OS (linux/arm64 on a Raspberry Pi)")
		return exitUser
	}
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return exitUsage
	}
	switch args[0] {
	case "run":
		return cmdRun(args[1:], stderr)
	case "validate":
		return cmdValidate(args[1:], stdout, stderr)
	case "replay":
		return cmdReplay(args[1:], stdin, stdout, stderr)
	case "buffer":
		return cmdBuffer(args[1:], stdout, stderr)
	case "passwd":
		return cmdPasswd(args[1:], stdin, stdout, stderr)
	case "version":
		return cmdVersion(stdout)
	case "help", "-h", "--help":
		fmt.Fprint(stdout, usage)
		return exitOK
	default:
		fmt.Fprintf(stderr, "edgegate: unknown command %q\n%s", args[0], usage)
		return exitUsage
	}
}

func newFlags(name string, stderr io.Writer) (*flag.FlagSet, *string) {
	fs := flag.NewFlagSet("edgegate "+name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	c := fs.String("c", defaultConfig, "config file")
	return fs, c
}

func cmdValidate(args []string, stdout, stderr io.Writer) int {
	fs, path := newFlags("validate", stderr)
	offline := fs.Bool("offline", false, "check the config alone, not the files and hardware it names (checked on another machine than the board)")
	if err := fs.Parse(args); err != nil {
		return exitUsage
	}
	cfg, err := config.Load(*path, registry())
	if err == nil && !*offline {
		err = preflight.Check(cfg, preflight.Options{})
	}
	if err != nil {
		printConfigError(stderr, err)
		return exitUser
	}
	fmt.Fprintf(stdout, "%s: valid: gateway %q, %d listener(s), %d route(s), %d sensor(s), %d pipeline(s), %d uplink(s)\n",
		*path, cfg.Gateway.ID, len(cfg.Broker.Listeners), len(cfg.Routes), len(cfg.Sensors), len(cfg.Pipelines), len(cfg.Uplinks))
	return exitOK
}

func printConfigError(stderr io.Writer, err error) {
	var es conf.Errors
	if errors.As(err, &es) {
		for _, e := range es {
			fmt.Fprintln(stderr, e.Error())
		}
		fmt.Fprintf(stderr, "%d problem(s) found\n", len(es))
		return
	}
	fmt.Fprintf(stderr, "edgegate: %v\n", err)
}

func cmdRun(args []string, stderr io.Writer) int {
	fs, path := newFlags("run", stderr)
	if err := fs.Parse(args); err != nil {
		return exitUsage
	}
	cfg, err := config.Load(*path, registry())
	if err != nil {
		printConfigError(stderr, err)
		return exitUser
	}
	return runDaemon(*path, cfg, stderr)
}

func cmdVersion(stdout io.Writer) int {
	c := commit
	if c == "" {
		if bi, ok := debug.ReadBuildInfo(); ok {
			for _, s := range bi.Settings {
				if s.Key == "vcs.revision" {
					c = s.Value
				}
			}
		}
	}
	if c == "" {
		c = "unknown"
	}
	fmt.Fprintf(stdout, "edgegate %s (commit %s, %s, %s/%s)\n", version, c, runtime.Version(), runtime.GOOS, runtime.GOARCH)
	return exitOK
}
