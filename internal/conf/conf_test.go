package conf

import "testing"

func TestByteSize(t *testing.T) {
	for in, want := range map[string]ByteSize{"64KiB": 64 << 10, "512MiB": 512 << 20, "1GiB": 1 << 30, "1000": 1000, "2MB": 2e6, "1.5KiB": 1536} {
		got, err := ParseByteSize(in)
		if err != nil || got != want {
			t.Errorf("ParseByteSize(%q) = %d, %v; want %d", in, got, err, want)
		}
	}
	for _, bad := range []string{"", "-1KiB", "1 XB", "KiB", "1e400"} {
		if _, err := ParseByteSize(bad); err == nil {
			t.Errorf("ParseByteSize(%q) accepted", bad)
		}
	}
}
