package boltfile

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/fnv"
	"io"
	"os"
)

// bbolt 1.x's file format (go.etcd.io/bbolt/internal/common), read here
// without bbolt. bbolt writes its structures in the machine's byte order.
//
// A file is a sequence of pages of one size. Pages 0 and 1 are meta pages:
// bbolt writes them in turn, one per transaction, and uses the valid one
// with the higher transaction id. A meta page names the root bucket's root
// page, the free-list page and the high-water mark (the number of pages in
// use). Every other page below the mark is either free or belongs to
// exactly one place in a tree of branch and leaf pages; a page with
// overflow n spans n+1 pages. A leaf element flagged as a bucket holds a
// bucket header (its root page, or 0 and an inline leaf page right after).
const (
	pageHeaderSize   = 16 // id u64, flags u16, count u16, overflow u32
	elementSize      = 16 // branch: pos u32, ksize u32, pgid u64; leaf: flags u32, pos u32, ksize u32, vsize u32
	bucketHeaderSize = 16 // root pgid u64, sequence u64
	metaSize         = 64 // magic, version, pageSize, flags u32; root, sequence, freelist, pgid, txid, checksum u64
	metaSummed       = 56 // the bytes the checksum covers

	flagBranch     = 0x01
	flagLeaf       = 0x02
	flagMeta       = 0x04
	flagFreelist   = 0x10
	flagBucketLeaf = 0x01

	boltMagic   = 0xED0CDAED
	boltVersion = 2
	noFreelist  = ^uint64(0)

	maxKeySize  = 32768   // bbolt.MaxKeySize
	minPageSize = 1024    // the smallest page size bbolt looks for
	maxPageSize = 1 << 24 // the largest
)

var order = binary.NativeEndian

// Error says what is wrong with a database file. Problem is short, in
// words a user can pass on; Err is the underlying error, when there is one
// (a panic's value, a decoding error).
type Error struct {
	Path    string // the file; set by Open, Create and DB
	Problem string
	Err     error
}

func (e *Error) Error() string {
	if e.Path == "" {
		return "boltfile: damaged: " + e.Problem
	}
	return "boltfile: " + e.Path + " is damaged: " + e.Problem
}

func (e *Error) Unwrap() error { return e.Err }

// Damage returns an error that marks the file damaged when a transaction
// function returns it (wrapped or not).
func Damage(cause error, format string, args ...any) *Error {
	return &Error{Problem: fmt.Sprintf(format, args...), Err: cause}
}

func damagef(format string, args ...any) *Error { return Damage(nil, format, args...) }

// Layout is where a sound file keeps its pages, for tools and for tests
// that damage copies on purpose.
type Layout struct {
	PageSize  int
	Meta      int    // the meta page in use: 0 or 1
	Txid      uint64 // its transaction id
	HighWater uint64 // pages in use, counting free ones: the file may be longer
	Freelist  uint64 // the free-list page; 0 when the free list is not kept in the file
	Free      []uint64
	Leaked    []uint64 // pages neither in use nor free
	Pages     []Page   // every page of every bucket, parents before children
}

// Page is one page of a bucket's tree.
type Page struct {
	ID       uint64
	Overflow int  // further pages it spans
	Branch   bool // a branch page; else a leaf page
	Depth    int  // 0 for a bucket's root page
	// Bucket is the path of the bucket the page belongs to, names joined
	// by "/": "" for the root bucket (whose leaves hold the top-level
	// buckets' headers), "blocks" for a top-level bucket.
	Bucket string
}

// Check reads the database file at path and returns an *Error if it is
// damaged, or another error if it cannot be read.
func Check(path string) error {
	_, err := Inspect(path)
	return err
}

// Inspect checks the file at path like Check and returns its layout.
func Inspect(path string) (*Layout, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, err
	}
	l := new(Layout)
	if err := check(f, fi.Size(), l); err != nil {
		var e *Error
		if errors.As(err, &e) {
			e.Path = path
		}
		return nil, err
	}
	return l, nil
}

// check examines the bbolt file that r reads, size bytes long, and fills
// in l if it is not nil. It returns an *Error for damage and any other
// error for a failure to read.
//
// What it checks is what bbolt relies on without checking, so that bbolt
// neither panics nor reads outside its map on a file that passed: the meta
// page bbolt will use; that every page it can reach lies inside the file
// and the high-water mark, says it is the page it should be, is of the
// kind expected there, and is reached once; that each element, key and
// value lies inside its page, keys are non-empty, no longer than bbolt
// allows and in order (within a page and between a branch and its
// children), and pages other than a bucket's root hold keys; bucket
// headers and inline buckets; and that the free list names pages inside
// the file, once each, none of them in use. Values are not read: they are
// the stores' business.
//
// One rule is stricter than bbolt's Tx.Check: a branch key must equal the
// first key of the page it leads to, not merely lie below it. bbolt
// depends on it when it writes: it finds a child's entry in its parent by
// the child's first key, and where none matches it adds a second entry
// and frees the page the first still names. A damaged hash key usually
// keeps its order, so only this rule finds it.
func check(r io.ReaderAt, size int64, l *Layout) error {
	if size == 0 {
		return damagef("the file is empty")
	}
	ps, err := pageSize(r, size)
	if err != nil {
		return err
	}
	if size < 2*int64(ps) {
		return damagef("the file is too short to hold a database (%d bytes)", size)
	}
	m, which, err := chooseMeta(r, ps)
	if err != nil {
		return err
	}
	// The high-water mark bounds every page id below; checking it against
	// the file's length first also bounds the memory the check uses.
	if m.pgid > uint64(size)/uint64(ps) {
		return damagef("it is cut short: %d bytes, but its pages need %d", size, m.pgid*uint64(ps))
	}
	if m.pgid < 3 {
		return damagef("header page %d says the file has %d pages", which, m.pgid)
	}
	if m.root < 2 || m.root >= m.pgid {
		return damagef("header page %d names page %d as the root, outside pages 2 to %d", which, m.root, m.pgid-1)
	}
	if m.freelist != noFreelist && (m.freelist < 2 || m.freelist >= m.pgid) {
		return damagef("header page %d names page %d as the free list, outside pages 2 to %d", which, m.freelist, m.pgid-1)
	}
	c := &checker{r: r, ps: uint64(ps), hwm: m.pgid, state: make([]pageState, m.pgid), layout: l}
	c.state[0], c.state[1] = inUse, inUse
	if l != nil {
		*l = Layout{PageSize: ps, Meta: which, Txid: m.txid, HighWater: m.pgid}
	}
	if m.freelist != noFreelist {
		if err := c.readFreelist(m.freelist); err != nil {
			return err
		}
	}
	if err := c.walk(m.root); err != nil {
		return err
	}
	// A page neither in use nor free is not damage: bbolt never touches
	// it again, and bbolt 1.5.0 leaves such pages itself (deleting a
	// bucket in the transaction that created a nested bucket in it, see
	// TestLeakedPagesAreNotDamage), which its own Tx.Check reports as
	// "unreachable unfreed".
	if l != nil && m.freelist != noFreelist {
		for id := uint64(2); id < m.pgid; id++ {
			if c.state[id] == unknown {
				l.Leaked = append(l.Leaked, id)
			}
		}
	}
	return nil
}

type meta struct {
	magic, version, pageSize          uint32
	root, freelist, pgid, txid, check uint64
	sum                               uint64 // what the checksum should be
}

// readMeta reads the meta page at off; a short read leaves zeros, which
// fail validation, as in bbolt.
func readMeta(r io.ReaderAt, off int64) (meta, error) {
	var b [pageHeaderSize + metaSize]byte
	if _, err := r.ReadAt(b[:], off); err != nil && err != io.EOF {
		return meta{}, err
	}
	d := b[pageHeaderSize:]
	h := fnv.New64a()
	h.Write(d[:metaSummed])
	return meta{
		magic:    order.Uint32(d[0:]),
		version:  order.Uint32(d[4:]),
		pageSize: order.Uint32(d[8:]),
		root:     order.Uint64(d[16:]),
		freelist: order.Uint64(d[32:]),
		pgid:     order.Uint64(d[40:]),
		txid:     order.Uint64(d[48:]),
		check:    order.Uint64(d[56:]),
		sum:      h.Sum64(),
	}, nil
}

// metaFault is what is wrong with a meta page, as bbolt's Meta.Validate
// sees it: nothing, not a meta page at all, or a bad checksum.
type metaFault int

const (
	metaOK metaFault = iota
	metaForeign
	metaChecksum
)

func (m meta) fault() metaFault {
	switch {
	case m.magic != boltMagic || m.version != boltVersion:
		return metaForeign
	case m.check != m.sum:
		return metaChecksum
	}
	return metaOK
}

// pageSize finds the page size the way bbolt's Open does: from meta page
// 0 if it is valid, else from the first valid meta page found at the
// offsets a second meta page could have.
func pageSize(r io.ReaderAt, size int64) (int, error) {
	valid := func(off int64) (int, bool, error) {
		m, err := readMeta(r, off)
		if err != nil || m.fault() != metaOK {
			return 0, false, err
		}
		return int(m.pageSize), true, nil
	}
	ps, ok, err := valid(0)
	for i := 0; !ok && err == nil && i <= 14; i++ {
		off := int64(minPageSize) << i
		if off >= size-minPageSize {
			break
		}
		ps, ok, err = valid(off)
	}
	switch {
	case err != nil:
		return 0, err
	case !ok:
		return 0, damagef("neither of its two header pages is valid")
	case ps < minPageSize || ps > maxPageSize:
		return 0, damagef("its header gives an impossible page size (%d)", ps)
	}
	return ps, nil
}

// chooseMeta returns the meta page bbolt will use and which one it is.
//
// A meta page with a bad checksum beside a valid one is not damage: it is
// what a crash while bbolt wrote it leaves, and bbolt then uses the other
// one, which describes the state before the interrupted transaction, whose
// pages bbolt has not reused. A meta page that is not one at all (its magic
// number or version gone) is damage: bbolt always writes both in full.
func chooseMeta(r io.ReaderAt, ps int) (meta, int, error) {
	var m [2]meta
	for i := range m {
		var err error
		if m[i], err = readMeta(r, int64(i*ps)); err != nil {
			return meta{}, 0, err
		}
	}
	f0, f1 := m[0].fault(), m[1].fault()
	switch {
	case f0 != metaOK && f1 != metaOK:
		return meta{}, 0, damagef("neither of its two header pages is valid")
	case f0 == metaForeign:
		return meta{}, 0, damagef("header page 0 is overwritten")
	case f1 == metaForeign:
		return meta{}, 0, damagef("header page 1 is overwritten")
	case f0 == metaOK && f1 == metaOK && m[0].pageSize != m[1].pageSize:
		return meta{}, 0, damagef("its header pages disagree on the page size (%d and %d)", m[0].pageSize, m[1].pageSize)
	}
	hi, lo := 0, 1
	if m[1].txid > m[0].txid {
		hi, lo = 1, 0
	}
	if m[hi].fault() != metaOK {
		hi = lo
	}
	if int(m[hi].pageSize) != ps {
		return meta{}, 0, damagef("header page %d gives page size %d, but the file uses %d", hi, m[hi].pageSize, ps)
	}
	return m[hi], hi, nil
}

type pageState uint8

const (
	unknown pageState = iota
	free
	inUse
)

type checker struct {
	r      io.ReaderAt
	ps     uint64
	hwm    uint64 // the high-water mark: page ids are below it
	state  []pageState
	buf    []byte // the first page of the span being read
	layout *Layout
}

// span is a page and its overflow pages. head holds the first page; the
// rest is read only where an element points into it, so that a damaged
// overflow count costs reads, never an allocation the size of the file.
type span struct {
	id   uint64
	head []byte
	size uint64 // bytes in the span
	r    io.ReaderAt
	off  int64 // the span's offset in the file; unused for inline pages
}

func (s *span) bytes(at, n uint64) ([]byte, error) {
	if at+n <= uint64(len(s.head)) {
		return s.head[at : at+n], nil
	}
	b := make([]byte, n)
	if _, err := s.r.ReadAt(b, s.off+int64(at)); err != nil {
		return nil, err
	}
	return b, nil
}

// readPage reads page id, checks its header and marks the pages it spans
// in use.
func (c *checker) readPage(id, parent uint64) (*span, uint16, error) {
	if id < 2 || id >= c.hwm {
		from := "the header page"
		if parent != 0 {
			from = fmt.Sprintf("page %d", parent)
		}
		return nil, 0, damagef("%s names page %d, outside pages 2 to %d", from, id, c.hwm-1)
	}
	if c.buf == nil {
		c.buf = make([]byte, c.ps)
	}
	off := int64(id * c.ps)
	if _, err := c.r.ReadAt(c.buf, off); err != nil {
		if err == io.EOF {
			return nil, 0, damagef("page %d lies past the end of the file", id)
		}
		return nil, 0, err
	}
	hid := order.Uint64(c.buf[0:])
	flags := order.Uint16(c.buf[8:])
	overflow := uint64(order.Uint32(c.buf[12:]))
	if hid != id {
		return nil, 0, damagef("page %d says it is page %d", id, hid)
	}
	if overflow >= c.hwm-id {
		return nil, 0, damagef("page %d claims %d more pages, past the last page %d", id, overflow, c.hwm-1)
	}
	for p := id; p <= id+overflow; p++ {
		switch c.state[p] {
		case inUse:
			return nil, 0, damagef("page %d is in use twice", p)
		case free:
			return nil, 0, damagef("page %d is in use and also listed as free", p)
		}
		c.state[p] = inUse
	}
	return &span{id: id, head: c.buf, size: (overflow + 1) * c.ps, r: c.r, off: off}, flags, nil
}

func (c *checker) readFreelist(id uint64) error {
	s, flags, err := c.readPage(id, 0)
	if err != nil {
		return err
	}
	if flags != flagFreelist {
		return damagef("page %d should hold the free list but is %s", id, kind(flags))
	}
	count := uint64(order.Uint16(s.head[10:]))
	at := uint64(pageHeaderSize)
	if count == 0xFFFF { // the real count is the first id slot
		b, err := s.bytes(at, 8)
		if err != nil {
			return err
		}
		count = order.Uint64(b)
		at += 8
	}
	if count > (s.size-at)/8 {
		return damagef("the free list on page %d claims %d pages, more than the page holds", id, count)
	}
	b, err := s.bytes(at, count*8)
	if err != nil {
		return err
	}
	if c.layout != nil {
		c.layout.Freelist = id
	}
	for i := uint64(0); i < count; i++ {
		p := order.Uint64(b[i*8:])
		if p < 2 || p >= c.hwm {
			return damagef("the free list names page %d, outside pages 2 to %d", p, c.hwm-1)
		}
		switch c.state[p] {
		case free:
			return damagef("the free list names page %d twice", p)
		case inUse:
			return damagef("page %d is in use and also listed as free", p)
		}
		c.state[p] = free
		if c.layout != nil {
			c.layout.Free = append(c.layout.Free, p)
		}
	}
	return nil
}

// visit is a page to check: its first key must be lo and its keys must
// lie below hi (nil for no bound). An inline bucket's page has no id: inline holds its bytes.
type visit struct {
	id     uint64
	inline []byte
	lo, hi []byte
	depth  int
	bucket string
	parent uint64 // the page that names this one; 0 for the header page
}

// walk checks the tree of the root bucket and of every bucket in it,
// depth first with a stack of its own: a page reached twice is an error
// before it is read again, so damage cannot make it loop.
func (c *checker) walk(root uint64) error {
	stack := []visit{{id: root}}
	for len(stack) > 0 {
		v := stack[len(stack)-1]
		stack = stack[:len(stack)-1]
		var (
			s     *span
			flags uint16
			err   error
		)
		if v.inline != nil {
			s = &span{id: v.id, head: v.inline, size: uint64(len(v.inline))}
			flags = order.Uint16(v.inline[8:])
			if flags != flagLeaf {
				return damagef("page %d: bucket %q is inline but not a leaf (%s)", v.id, v.bucket, kind(flags))
			}
		} else {
			if s, flags, err = c.readPage(v.id, v.parent); err != nil {
				return err
			}
			if flags != flagBranch && flags != flagLeaf {
				return damagef("page %d should belong to a bucket but is %s", v.id, kind(flags))
			}
			if c.layout != nil {
				c.layout.Pages = append(c.layout.Pages, Page{ID: v.id, Overflow: int(s.size/c.ps) - 1, Branch: flags == flagBranch, Depth: v.depth, Bucket: v.bucket})
			}
		}
		next, err := c.elements(s, flags == flagBranch, v)
		if err != nil {
			return err
		}
		// Reversed, so that pages come off the stack in key order, which
		// for a file bbolt wrote is mostly the order of the file.
		for i := len(next) - 1; i >= 0; i-- {
			stack = append(stack, next[i])
		}
	}
	return nil
}

// elements checks the elements of the page in s and returns what they
// lead to: child pages, and the buckets whose headers a leaf holds.
func (c *checker) elements(s *span, branch bool, v visit) ([]visit, error) {
	count := uint64(order.Uint16(s.head[10:]))
	if count == 0 && (branch || v.lo != nil) {
		// bbolt removes a page that becomes empty, except a bucket's
		// root leaf; it would fail on one it found.
		return nil, damagef("page %d is empty but is not a bucket's root leaf", s.id)
	}
	if pageHeaderSize+count*elementSize > s.size {
		return nil, damagef("page %d: its %d entries do not fit in it", s.id, count)
	}
	var (
		next []visit
		prev []byte
		keys [][]byte // a branch's keys, copied: the buffer is reused
	)
	for i := uint64(0); i < count; i++ {
		off := pageHeaderSize + i*elementSize
		e, err := s.bytes(off, elementSize)
		if err != nil {
			return nil, err
		}
		var pos, ksize, vsize, eflags uint64
		if branch {
			pos, ksize = uint64(order.Uint32(e[0:])), uint64(order.Uint32(e[4:]))
		} else {
			eflags, pos, ksize, vsize = uint64(order.Uint32(e[0:])), uint64(order.Uint32(e[4:])), uint64(order.Uint32(e[8:])), uint64(order.Uint32(e[12:]))
		}
		switch kat := off + pos; {
		case ksize == 0:
			return nil, damagef("page %d: key %d is empty", s.id, i)
		case ksize > maxKeySize:
			return nil, damagef("page %d: key %d is longer than bbolt allows (%d bytes)", s.id, i, ksize)
		case kat+ksize+vsize > s.size:
			return nil, damagef("page %d: entry %d lies outside the page", s.id, i)
		}
		key, err := s.bytes(off+pos, ksize)
		if err != nil {
			return nil, err
		}
		switch {
		case i == 0 && v.lo != nil && !bytes.Equal(key, v.lo):
			return nil, damagef("page %d: its first key differs from the key page %d has for it", s.id, v.parent)
		case i > 0 && bytes.Compare(key, prev) <= 0,
			v.hi != nil && bytes.Compare(key, v.hi) >= 0:
			return nil, damagef("page %d: key %d is out of order", s.id, i)
		}
		prev = key
		if branch {
			key = bytes.Clone(key)
			keys = append(keys, key)
			next = append(next, visit{id: order.Uint64(e[8:]), lo: key, depth: v.depth + 1, bucket: v.bucket, parent: s.id})
			continue
		}
		if eflags&flagBucketLeaf == 0 {
			continue
		}
		name := string(key)
		if v.bucket != "" {
			name = v.bucket + "/" + name
		}
		if vsize < bucketHeaderSize {
			return nil, damagef("page %d: bucket %q has a damaged header", s.id, name)
		}
		val, err := s.bytes(off+pos+ksize, min(vsize, c.ps))
		if err != nil {
			return nil, err
		}
		if root := order.Uint64(val); root != 0 {
			next = append(next, visit{id: root, bucket: name, parent: s.id})
			continue
		}
		// bbolt keeps a bucket inline only while it is at most a quarter
		// of a page.
		if vsize < bucketHeaderSize+pageHeaderSize || vsize > c.ps {
			return nil, damagef("page %d: inline bucket %q has a damaged header", s.id, name)
		}
		next = append(next, visit{id: s.id, inline: bytes.Clone(val[bucketHeaderSize:]), bucket: name})
	}
	if branch { // each child's keys lie below the next branch key
		for i := range next {
			if i+1 < len(next) {
				next[i].hi = keys[i+1]
			} else {
				next[i].hi = v.hi
			}
		}
	}
	return next, nil
}

func kind(flags uint16) string {
	switch flags {
	case flagBranch:
		return "a branch page"
	case flagLeaf:
		return "a leaf page"
	case flagMeta:
		return "a header page"
	case flagFreelist:
		return "a free-list page"
	}
	return fmt.Sprintf("of no known kind (flags %#x)", flags)
}
