module github.com/gomultiprocess/multiprocess

go 1.26.8

require (
	capnproto.org/go/capnp/v3 v3.1.0-alpha.2
	go.etcd.io/bbolt v1.5.0
	go.uber.org/goleak v1.3.0
	golang.org/x/sys v0.49.0
)

require (
	github.com/colega/zeropool v0.0.0-20230505084239-6fb4a4f75381 // indirect
	github.com/stretchr/testify v1.12.1 // indirect
	golang.org/x/sync v0.20.0 // indirect
)

tool (
	capnproto.org/go/capnp/v3/capnpc-go
	github.com/gomultiprocess/multiprocess/cmd/mpgen
)
