package protocol_test

import (
	"context"
	"errors"

	schema "github.com/gomultiprocess/multiprocess/internal/capnpschema"
)

// The protocol tests serve Init only for makeEcho and hello.

func (*initServer) SubscribeLifetime(context.Context, schema.Init_subscribeLifetime) error {
	return errors.New("not served by this test")
}

func (*initServer) Stop(context.Context, schema.Init_stop) error {
	return errors.New("not served by this test")
}

func (*initServer) MakeNode(context.Context, schema.Init_makeNode) error {
	return errors.New("not served by this test")
}

func (*initServer) MakeChain(context.Context, schema.Init_makeChain) error {
	return errors.New("not served by this test")
}

func (*initServer) MakeWalletLoader(context.Context, schema.Init_makeWalletLoader) error {
	return errors.New("not served by this test")
}
