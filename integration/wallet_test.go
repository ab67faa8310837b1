package integration

import (
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"testing"
)

// The wallet refuses bad spawn arguments with exit status 1 and a message
// naming the problem, and prints its usage (exit 2) when run by hand.
func TestWalletBadArguments(t *testing.T) {
	notSocket, err := os.Create(filepath.Join(t.TempDir(), "plain"))
	if err != nil {
		t.Fatal(err)
	}
	defer notSocket.Close()
	cases := []struct {
		name   string
		args   []string
		files  []*os.File
		status int
		want   string
	}{
		{"not a number", []string{"-ipcfd", "abc"}, nil, 1, `abc`},
		{"extra argument", []string{"-ipcfd", "3", "extra"}, nil, 1, `extra`},
		{"not a socket", []string{"-ipcfd", "3"}, []*os.File{notSocket}, 1, `not a socket`},
		{"closed descriptor", []string{"-ipcfd", "9"}, nil, 1, `9`},
		{"run by hand", nil, nil, 2, `Usage: wallet -ipcfd N`},
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
