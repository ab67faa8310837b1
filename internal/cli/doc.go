// Package cli holds what the executables in cmd/ share on the command line:
// Bitcoin Core-style -name=value flags, the -debug categories and the
// logger set-up. It holds no application logic.
package cli
