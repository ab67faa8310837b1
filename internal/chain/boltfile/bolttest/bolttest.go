// Package bolttest helps tests damage copies of bbolt database files on
// purpose, aiming at the pages that matter: it finds them with
// boltfile.Inspect and writes through a descriptor of its own, as another
// program or a failing disk would.
package bolttest

import (
	"encoding/binary"
	"io"
	"os"
	"testing"

	"github.com/gomultiprocess/multiprocess/internal/chain/boltfile"
)

// bbolt's page layout: a 16-byte header (id u64, flags u16, count u16,
// overflow u32), then 16-byte elements. A branch element is pos, ksize
// (u32 each) and the child's page id (u64); a leaf element is flags, pos,
// ksize and vsize (u32 each). pos is the key's offset from the element;
// a leaf's value follows its key.
const (
	Header  = 16
	Element = 16
)

// File is a copy of a database file, and the layout of the original.
type File struct {
	T      testing.TB
	Path   string
	Layout *boltfile.Layout
}

// Copy copies the sound database file src to dst and returns it.
func Copy(t testing.TB, src, dst string) *File {
	t.Helper()
	l, err := boltfile.Inspect(src)
	if err != nil {
		t.Fatal(err)
	}
	in, err := os.Open(src)
	if err != nil {
		t.Fatal(err)
	}
	defer in.Close()
	out, err := os.Create(dst)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.Copy(out, in); err != nil {
		t.Fatal(err)
	}
	if err := out.Close(); err != nil {
		t.Fatal(err)
	}
	return &File{T: t, Path: dst, Layout: l}
}

// PageSize is the file's page size.
func (f *File) PageSize() int { return f.Layout.PageSize }

// Page returns the id of a page of bucket's tree (see boltfile.Page), a
// branch page or a leaf page, after skipping skip of them.
func (f *File) Page(bucket string, branch bool, skip int) uint64 {
	f.T.Helper()
	for _, p := range f.Layout.Pages {
		if p.Bucket == bucket && p.Branch == branch {
			if skip == 0 {
				return p.ID
			}
			skip--
		}
	}
	f.T.Fatalf("no page %d of bucket %q with branch=%v", skip, bucket, branch)
	return 0
}

// Read returns page id.
func (f *File) Read(id uint64) []byte {
	f.T.Helper()
	b := make([]byte, f.PageSize())
	fd, err := os.Open(f.Path)
	if err != nil {
		f.T.Fatal(err)
	}
	defer fd.Close()
	if _, err := fd.ReadAt(b, int64(id)*int64(f.PageSize())); err != nil {
		f.T.Fatal(err)
	}
	return b
}

// Write writes b from the start of page id on.
func (f *File) Write(id uint64, b []byte) {
	f.T.Helper()
	fd, err := os.OpenFile(f.Path, os.O_WRONLY, 0)
	if err != nil {
		f.T.Fatal(err)
	}
	defer fd.Close()
	if _, err := fd.WriteAt(b, int64(id)*int64(f.PageSize())); err != nil {
		f.T.Fatal(err)
	}
}

// Edit changes page id with fn.
func (f *File) Edit(id uint64, fn func(page []byte)) {
	f.T.Helper()
	p := f.Read(id)
	fn(p)
	f.Write(id, p)
}

// Zero zeroes page id.
func (f *File) Zero(id uint64) { f.Write(id, make([]byte, f.PageSize())) }

// Garbage fills page id from offset from on with bytes that mean nothing.
func (f *File) Garbage(id uint64, from int) {
	f.Edit(id, func(p []byte) {
		for i := from; i < len(p); i++ {
			p[i] = byte(i*7 + 3)
		}
	})
}

// Truncate cuts the file to size bytes.
func (f *File) Truncate(size int64) {
	f.T.Helper()
	if err := os.Truncate(f.Path, size); err != nil {
		f.T.Fatal(err)
	}
}

// Key returns where element i's key lies in page p, and its length. For a
// leaf, the value follows.
func Key(p []byte, i int) (off, n int) {
	e := Header + i*Element
	if binary.NativeEndian.Uint16(p[8:]) == 0x01 { // a branch page
		return e + int(binary.NativeEndian.Uint32(p[e:])), int(binary.NativeEndian.Uint32(p[e+4:]))
	}
	return e + int(binary.NativeEndian.Uint32(p[e+4:])), int(binary.NativeEndian.Uint32(p[e+8:]))
}

// Value returns where leaf element i's value lies in page p, and its
// length.
func Value(p []byte, i int) (off, n int) {
	koff, kn := Key(p, i)
	return koff + kn, int(binary.NativeEndian.Uint32(p[Header+i*Element+12:]))
}

// SetField writes v, in the machine's byte order as bbolt does, at off in
// page p: 2, 4 or 8 bytes as v's type says.
func SetField[T uint16 | uint32 | uint64](p []byte, off int, v T) {
	switch v := any(v).(type) {
	case uint16:
		binary.NativeEndian.PutUint16(p[off:], v)
	case uint32:
		binary.NativeEndian.PutUint32(p[off:], v)
	case uint64:
		binary.NativeEndian.PutUint64(p[off:], v)
	}
}

// ListFree adds page id to the free list, as damage that makes bbolt
// panic later with "page N already freed" would.
func (f *File) ListFree(id uint64) {
	f.Edit(f.Layout.Freelist, func(p []byte) {
		n := binary.NativeEndian.Uint16(p[10:])
		SetField(p, Header+8*int(n), id)
		SetField(p, 10, n+1)
	})
}
