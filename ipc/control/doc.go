// Package control is the framework's own schema, with the Go that mpgen
// generates from it: the Control interface that every process built on
// package ipc answers beside its application's Init (a version handshake,
// a graceful stop, a subscription to lifetime events), the PeerInfo the
// handshake exchanges, and the lifetime events (after dcrd's). Its type
// IDs are pinned: peers in other languages find the interfaces by them.
// Methods are only ever appended; a method a peer lacks means that
// feature is absent.
package control
