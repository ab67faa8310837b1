package rpcconn

import (
	"context"

	"capnproto.org/go/capnp/v3"
)

// DeliverHeld delivers r to the local server srv and returns the
// PipelineCaller for calls pipelined on it, which keeps them until the
// call returns (see heldCall), and then hands them on in order.
//
// It is for calls made in this process on a go-capnp server, with no
// connection between: the server's AnswerQueue would queue the calls
// pipelined on a running call, and its Fulfill crashes the process on
// one whose target is a null capability or has no such method.
func DeliverHeld(ctx context.Context, srv capnp.ClientHook, r capnp.Recv) capnp.PipelineCaller {
	h := hold(&r)
	h.settle(srv.Recv(ctx, r), nil)
	return h
}

// SendHeld makes the call s on the local server srv through DeliverHeld:
// it is what srv's Send does, without go-capnp's AnswerQueue.
func SendHeld(ctx context.Context, srv capnp.ClientHook, s capnp.Send) (*capnp.Answer, capnp.ReleaseFunc) {
	r, ret, err := sendToRecv(s)
	if err != nil {
		return capnp.ErrorAnswer(s.Method, err), func() {}
	}
	return ret.Answer(s.Method, DeliverHeld(ctx, srv, r))
}
