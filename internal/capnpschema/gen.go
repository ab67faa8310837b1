package capnpschema

//go:generate sh gen.sh
