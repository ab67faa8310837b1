package integration

import (
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"testing"
)

// -ipcfd is how a node starts its wallet process: typed by hand, with a
// descriptor that is not a socket, a number that is not one or an extra
// argument, the wallet says so and exits 2 without touching anything; run
// with no arguments at all, it asks for the data directory.
func TestWalletBadArguments(t *testing.T) {
	notSocket, err := os.Create(filepath.Join(t.TempDir(), "plain"))
	if err != nil {
		t.Fatal(err)
	}
	defer notSocket.Close()
	const notForPeople = `wallet: -ipcfd is how a node starts its wallet process, not an option for people`
	cases := []struct {
		name   string
		args   []string
		files  []*os.File
		status int
		want   string
	}{
		{"not a number", []string{"-ipcfd", "abc"}, nil, 2, notForPeople},
		{"extra argument", []string{"-ipcfd", "3", "extra"}, nil, 2, notForPeople},
		{"not a socket", []string{"-ipcfd", "3"}, []*os.File{notSocket}, 2, notForPeople},
		{"closed descriptor", []string{"-ipcfd=9"}, nil, 2, notForPeople},
		{"no arguments", nil, nil, 2, `wallet: no data directory: give -datadir=DIR`},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			p := start(t, "wallet", c.args, func(cmd *exec.Cmd) { cmd.ExtraFiles = c.files })
			ws := p.wait(t)
			if !ws.Exited() || ws.ExitStatus() != c.status {
				t.Fatalf("wallet %q ended with %v, want exit status %d; output:\n%s", c.args, ws, c.status, p.out.String())
			}
			p.out.waitFor(t, regexp.MustCompile(regexp.QuoteMeta(c.want)))
		})
	}
}
