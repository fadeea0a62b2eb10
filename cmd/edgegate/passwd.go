package main

import (
	"bufio"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"

	"golang.org/x/crypto/bcrypt"
	"golang.org/x/term"

	"github.com/edgegate/edgegate/gateway/config"
)

// passwdMaxLen is bcrypt's limit: it ignores (and x/crypto refuses) longer passwords.
const passwdMaxLen = 72

// cmdPasswd reads a password from stdin (its first line; without echo when stdin is a
// terminal) and prints its bcrypt hash for broker.users[].password_hash (SPEC §1).
func cmdPasswd(args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("edgegate passwd", flag.ContinueOnError)
	fs.SetOutput(stderr)
	cost := fs.Int("cost", bcrypt.DefaultCost, fmt.Sprintf("bcrypt cost (%d-%d): each +1 doubles the time of every login check", bcrypt.MinCost, config.MaxPasswordCost))
	fs.Usage = func() {
		fmt.Fprintln(stderr, "usage: edgegate passwd [-cost N] < password\n\nReads a password from stdin and prints its bcrypt hash for broker.users[].password_hash.")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return exitUsage
	}
	if fs.NArg() > 0 {
		fmt.Fprintln(stderr, "edgegate passwd: the password is read from stdin, not from the command line (it would stay in the shell history)")
		return exitUsage
	}
	if *cost < bcrypt.MinCost || *cost > config.MaxPasswordCost {
		fmt.Fprintf(stderr, "edgegate passwd: -cost %d: expected %d to %d\n", *cost, bcrypt.MinCost, config.MaxPasswordCost)
		return exitUsage
	}
	pw, err := readPassword(stdin, stderr)
	if err != nil {
		fmt.Fprintf(stderr, "edgegate passwd: %v\n", err)
		return exitUser
	}
	hash, err := bcrypt.GenerateFromPassword(pw, *cost)
	if err != nil {
		fmt.Fprintf(stderr, "edgegate passwd: %v\n", err)
		return exitUser
	}
	fmt.Fprintln(stdout, string(hash))
	return exitOK
}

func readPassword(stdin io.Reader, stderr io.Writer) ([]byte, error) {
	var pw []byte
	if f, ok := stdin.(*os.File); ok && term.IsTerminal(int(f.Fd())) {
		fmt.Fprint(stderr, "Password: ")
		b, err := term.ReadPassword(int(f.Fd()))
		fmt.Fprintln(stderr)
		if err != nil {
			return nil, fmt.Errorf("read password: %w", err)
		}
		pw = b
	} else {
		line, err := bufio.NewReader(io.LimitReader(stdin, 4096)).ReadString('\n')
		if err != nil && !errors.Is(err, io.EOF) {
			return nil, fmt.Errorf("read password from stdin: %w", err)
		}
		pw = []byte(strings.TrimRight(line, "\r\n"))
	}
	switch {
	case len(pw) == 0:
		return nil, errors.New("empty password on stdin (e.g. printf '%s' \"$PW\" | edgegate passwd)")
	case len(pw) > passwdMaxLen:
		return nil, fmt.Errorf("password of %d bytes: bcrypt uses at most %d", len(pw), passwdMaxLen)
	}
	return pw, nil
}
