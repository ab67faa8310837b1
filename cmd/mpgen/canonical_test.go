package main

import (
	"bytes"
	"os/exec"
	"strings"
	"testing"

	"capnproto.org/go/capnp/v3"

	"github.com/gomultiprocess/multiprocess/cmd/mpgen/internal/canon"
)

// capnpConvert runs `capnp convert` on in.
func capnpConvert(t *testing.T, in []byte, args ...string) []byte {
	t.Helper()
	cmd := exec.Command("capnp", append([]string{"convert"}, args...)...)
	if std := goCapnpStd(""); std != "" {
		cmd.Args = append(cmd.Args, "-I", std)
	}
	cmd.Stdin = bytes.NewReader(in)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("capnp convert %s: %v\n%s", strings.Join(args, " "), err, stderr.String())
	}
	return out
}

// TestCanonicalMatchesCapnp checks canonical against the C++ reference's
// canonicalization (capnp convert binary:canonical) on messages with
// every kind of object: structs with trailing zero words and null
// pointers, composite lists whose elements differ in size, bit, byte,
// pointer and nested lists, empty structs and lists.
func TestCanonicalMatchesCapnp(t *testing.T) {
	requireCapnp(t)
	texts := []string{
		`(scalars = (int8 = 0, text = "x", plainBool = true), lists = (points = [(x = 1), (x = 0, y = 0), (y = 2)],
		  pointLists = [[(x = 1)], []], texts = ["a", "", "bcdefghij"], bools = [true, false, true], int32Lists = [[1], []],
		  voids = [void, void], shapes = [(name = "a"), (extra = (tags = ["t"]))], datas = [0x"01", ""]),
		  shapes = [(name = "a", circle = 0), (square = (side = 1)), (point = ())],
		  defaults = (point = (x = 0, y = 0), lists = ()), generics = (settings = [(key = "k", value = "v")],
		  result = (value = (x = 5)), outer = (inner = (pairs = [(key = "p")]))))`,
		`()`,
		`(shapes = [(), ()], lists = (points = [(), ()]))`,
	}
	for _, text := range texts {
		bin := capnpConvert(t, []byte(text), "text:binary", "testdata/types.capnp", "Root")
		want := capnpConvert(t, bin, "binary:canonical")
		msg, err := capnp.Unmarshal(bin)
		if err != nil {
			t.Fatal(err)
		}
		root, err := msg.Root()
		if err != nil {
			t.Fatal(err)
		}
		got, err := canon.Encode(root)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, want) {
			t.Errorf("canonical of %s:\n got %x\nwant %x", text, got, want)
		}
	}
}

// TestCanonicalList checks the canonical form of a list as a root: the
// list laid out right after the root pointer.
func TestCanonicalList(t *testing.T) {
	_, seg, _ := capnp.NewMessage(capnp.SingleSegment(nil))
	l, _ := capnp.NewCompositeList(seg, capnp.ObjectSize{DataSize: 16, PointerCount: 1}, 2)
	l.Struct(0).SetUint32(0, 1)
	l.Struct(1).SetUint32(0, 3)
	got, err := canon.Encode(l.ToPtr())
	if err != nil {
		t.Fatal(err)
	}
	want := []byte{
		0x01, 0, 0, 0, 0x17, 0, 0, 0, // list pointer: offset 0, composite, 2 words
		0x08, 0, 0, 0, 0x01, 0, 0, 0, // tag: 2 elements of 1 data word, no pointers
		0x01, 0, 0, 0, 0, 0, 0, 0,
		0x03, 0, 0, 0, 0, 0, 0, 0,
	}
	if !bytes.Equal(got, want) {
		t.Errorf("got %x, want %x", got, want)
	}
}
