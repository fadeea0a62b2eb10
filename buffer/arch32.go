//go:build 386 || arm || mips || mipsle || ppc || wasm

package buffer

// edgegate refuses to build for 32-bit targets: Badger v4.9.6 silently loses keys in prefix
// iteration with compression on, and panics on deletes without it, when built for
// GOARCH=386 or arm (SPEC §6). Use a 64-bit OS: linux/arm64 on a Raspberry Pi 3, 4, 5 or
// Zero 2 W.
var _ = edgegate_does_not_support_32bit_targets_see_SPEC_section_6
