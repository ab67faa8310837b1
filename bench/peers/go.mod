module github.com/gomultiprocess/multiprocess/bench/peers

go 1.26.8

// The framework itself, from this checkout: the peers are measured with
// its bench/internal/probe, spawned with its package process, and
// go-capnp's rpc serves its capnpc-go schemas.
replace github.com/gomultiprocess/multiprocess => ../..

require (
	capnproto.org/go/capnp/v3 v3.1.0-alpha.2
	github.com/gomultiprocess/multiprocess v0.0.0-00010101000000-000000000000
	go.uber.org/goleak v1.3.0
	google.golang.org/grpc v1.85.0
	google.golang.org/protobuf v1.36.12
)

require (
	github.com/colega/zeropool v0.0.0-20230505084239-6fb4a4f75381 // indirect
	go.yaml.in/yaml/v3 v3.0.6 // indirect
	golang.org/x/net v0.60.0 // indirect
	golang.org/x/sync v0.23.0 // indirect
	golang.org/x/sys v0.49.0 // indirect
	golang.org/x/text v0.42.0 // indirect
	google.golang.org/genproto/googleapis/rpc v0.0.0-20260817212433-ac3dfec99bb1 // indirect
	google.golang.org/grpc/cmd/protoc-gen-go-grpc v1.6.2 // indirect
)

tool (
	google.golang.org/grpc/cmd/protoc-gen-go-grpc
	google.golang.org/protobuf/cmd/protoc-gen-go
)
