package main

import (
	"bytes"
	"strings"
	"testing"

	"golang.org/x/crypto/bcrypt"
)

func TestPasswd(t *testing.T) {
	cases := []struct {
		name, stdin string
		args        []string
		code        int
		password    string // the hash must verify this
		stderr      string
	}{
		{"line with newline", "s3cret pass\n", nil, 0, "s3cret pass", ""},
		{"no newline, CRLF-free", "s3cret", []string{"-cost", "4"}, 0, "s3cret", ""},
		{"only the first line", "first\r\nsecond\n", []string{"-cost", "4"}, 0, "first", ""},
		{"empty", "\n", nil, 1, "", "empty password"},
		{"too long for bcrypt", strings.Repeat("x", 73), nil, 1, "", "at most 72"},
		{"password as an argument", "", []string{"hunter2"}, 2, "", "read from stdin"},
		{"cost out of range", "x", []string{"-cost", "31"}, 2, "", "-cost 31"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			var out, errOut bytes.Buffer
			code := run(append([]string{"passwd"}, c.args...), strings.NewReader(c.stdin), &out, &errOut)
			if code != c.code {
				t.Fatalf("exit %d, want %d (stderr %q)", code, c.code, errOut.String())
			}
			if !strings.Contains(errOut.String(), c.stderr) {
				t.Errorf("stderr %q lacks %q", errOut.String(), c.stderr)
			}
			if c.code != 0 {
				return
			}
			hash := strings.TrimSuffix(out.String(), "\n")
			if err := bcrypt.CompareHashAndPassword([]byte(hash), []byte(c.password)); err != nil {
				t.Errorf("hash %q does not verify %q: %v", hash, c.password, err)
			}
			if strings.Contains(out.String(), c.password) {
				t.Error("the password appears in the output")
			}
		})
	}
}
