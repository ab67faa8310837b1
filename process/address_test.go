package process

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestParseAddress mirrors Bitcoin Core's parse_address_test
// (src/ipc/test/ipc_tests.cpp), with its data dir and program name, plus the
// cases our rules add.
func TestParseAddress(t *testing.T) {
	const dataDir = "/var/empty/notexist"
	long := strings.Repeat("0", 100) + ".sock"
	longPath := dataDir + "/" + long
	// Exactly MaxPathLen bytes fits; one more does not.
	fits := "/" + strings.Repeat("f", MaxPathLen-1)
	tests := []struct {
		name, addr string
		want       string
		wantErr    error
		wantMsg    string // the whole error message, when it matters
	}{
		{name: "test_bitcoin", addr: "unix", want: dataDir + "/test_bitcoin.sock"},
		{name: "test_bitcoin", addr: "unix:", want: dataDir + "/test_bitcoin.sock"},
		{name: "node", addr: "unix", want: dataDir + "/node.sock"},
		{name: "test_bitcoin", addr: "unix:path.sock", want: dataDir + "/path.sock"},
		{name: "test_bitcoin", addr: "unix:sub/path.sock", want: dataDir + "/sub/path.sock"},
		{name: "test_bitcoin", addr: "unix:/tmp/other.sock", want: "/tmp/other.sock"},
		{name: "test_bitcoin", addr: "unix:../up/./x.sock", want: "/var/empty/up/x.sock"},
		{name: "test_bitcoin", addr: "unix:/a/../b//c/.././d.sock", want: "/b/d.sock"},
		{name: "test_bitcoin", addr: "unix:" + fits, want: fits},
		{name: "test_bitcoin", addr: "unix:" + fits + "x", wantErr: ErrPathTooLong,
			wantMsg: `process: socket path too long: "` + fits + `x" is 108 bytes, at most 107 fit`},
		{name: "test_bitcoin", addr: "unix:" + long, wantErr: ErrPathTooLong,
			wantMsg: `process: socket path too long: "` + longPath + `" is 125 bytes, at most 107 fit`},
		{name: strings.Repeat("n", 200), addr: "unix", wantErr: ErrPathTooLong},
		{name: "test_bitcoin", addr: "unix:@abstract", wantErr: ErrUnrecognizedAddress,
			wantMsg: `process: unrecognized address "unix:@abstract"`},
		{name: "test_bitcoin", addr: "tcp:127.0.0.1:1", wantErr: ErrUnrecognizedAddress,
			wantMsg: `process: unrecognized address "tcp:127.0.0.1:1"`},
		{name: "test_bitcoin", addr: "", wantErr: ErrUnrecognizedAddress,
			wantMsg: `process: unrecognized address ""`},
		{name: "test_bitcoin", addr: "foo", wantErr: ErrUnrecognizedAddress,
			wantMsg: `process: unrecognized address "foo"`},
		{name: "test_bitcoin", addr: "invalid", wantErr: ErrUnrecognizedAddress},
		{name: "test_bitcoin", addr: "unixx", wantErr: ErrUnrecognizedAddress},
		{name: "test_bitcoin", addr: "UNIX", wantErr: ErrUnrecognizedAddress},
		{name: "test_bitcoin", addr: " unix", wantErr: ErrUnrecognizedAddress},
		{name: "test_bitcoin", addr: "unix:a\x00b", wantErr: ErrUnrecognizedAddress},
	}
	for _, tt := range tests {
		got, err := ParseAddress(dataDir, tt.name, tt.addr)
		if tt.wantErr == nil {
			if err != nil || got != tt.want {
				t.Errorf("ParseAddress(%q, %q, %q) = %q, %v; want %q", dataDir, tt.name, tt.addr, got, err, tt.want)
			}
			continue
		}
		if !errors.Is(err, tt.wantErr) || got != "" {
			t.Errorf("ParseAddress(%q, %q, %q) = %q, %v; want error %v", dataDir, tt.name, tt.addr, got, err, tt.wantErr)
			continue
		}
		if tt.wantMsg != "" && err.Error() != tt.wantMsg {
			t.Errorf("ParseAddress(%q, %q, %q) error:\n got %s\nwant %s", dataDir, tt.name, tt.addr, err, tt.wantMsg)
		}
	}
}

func TestParseAddressRelativeDataDir(t *testing.T) {
	wd, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct{ dataDir, addr, want string }{
		{"data", "unix", filepath.Join(wd, "data", "node.sock")},
		{"data", "unix:x.sock", filepath.Join(wd, "data", "x.sock")},
		{"", "unix", filepath.Join(wd, "node.sock")},
		{"data", "unix:/abs.sock", "/abs.sock"},
	}
	for _, tt := range tests {
		got, err := ParseAddress(tt.dataDir, "node", tt.addr)
		if err != nil || got != tt.want {
			t.Errorf("ParseAddress(%q, node, %q) = %q, %v; want %q", tt.dataDir, tt.addr, got, err, tt.want)
		}
	}
}

func TestParseAddressBadName(t *testing.T) {
	for _, name := range []string{"", ".", "..", "a/b"} {
		if got, err := ParseAddress("/data", name, "unix"); err == nil {
			t.Errorf("ParseAddress(/data, %q, unix) = %q, want an error", name, got)
		}
	}
	// A name only matters for the default path.
	if got, err := ParseAddress("/data", "", "unix:x.sock"); err != nil || got != "/data/x.sock" {
		t.Errorf(`ParseAddress(/data, "", unix:x.sock) = %q, %v`, got, err)
	}
}

func TestAddressRoundTrip(t *testing.T) {
	const path = "/var/empty/notexist/node.sock"
	if got, want := Address(path), "unix:"+path; got != want {
		t.Fatalf("Address(%q) = %q, want %q", path, got, want)
	}
	got, err := ParseAddress("/elsewhere", "wallet", Address(path))
	if err != nil || got != path {
		t.Fatalf("ParseAddress(Address(%q)) = %q, %v", path, got, err)
	}
}
