package node

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"

	schema "github.com/gomultiprocess/multiprocess/internal/capnpschema"
	"github.com/gomultiprocess/multiprocess/internal/chain"
	"github.com/gomultiprocess/multiprocess/internal/chainwire"
	"github.com/gomultiprocess/multiprocess/protocol"
)

// chainService serves the chain store over IPC and owns the goroutines
// that deliver blocks to subscribers (Chain.handleNotifications).
type chainService struct {
	store *chain.Store
	log   *slog.Logger
	opts  *protocol.ServerOptions

	// ctx ends every subscription when the service stops; wg owns their
	// goroutines.
	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup
}

func newChainService(store *chain.Store, log *slog.Logger) *chainService {
	ctx, cancel := context.WithCancel(context.Background())
	return &chainService{
		store:  store,
		log:    log,
		opts:   &protocol.ServerOptions{Logger: log},
		ctx:    ctx,
		cancel: cancel,
	}
}

// stop ends every subscription, waits for their goroutines and closes the
// store.
func (s *chainService) stop() {
	s.cancel()
	s.wg.Wait()
	if err := s.store.Close(); err != nil {
		s.log.Warn("closing the chain database failed", "err", err)
	}
}

// capability returns a new Chain capability served by s.
func (s *chainService) capability() schema.Chain {
	srv := chainServer{s}
	return schema.Chain(protocol.NewServer(schema.Chain_Methods(nil, srv), srv, s.opts))
}

// chainServer is schema.Chain over the store.
type chainServer struct{ s *chainService }

func (c chainServer) Height(_ context.Context, call schema.Chain_height) error {
	res, err := call.AllocResults()
	if err != nil {
		return err
	}
	res.SetHeight(c.s.store.Tip().Height)
	return nil
}

func (c chainServer) BlockHash(_ context.Context, call schema.Chain_blockHash) error {
	b, err := c.s.store.BlockAt(call.Args().Height())
	if err != nil {
		return err
	}
	res, err := call.AllocResults()
	if err != nil {
		return err
	}
	return res.SetHash(b.Hash[:])
}

func (c chainServer) Block(_ context.Context, call schema.Chain_block) error {
	raw, err := call.Args().Hash()
	if err != nil {
		return fmt.Errorf("read hash: %w", err)
	}
	h, err := chain.HashFromBytes(raw)
	if err != nil {
		return err
	}
	b, err := c.s.store.BlockByHash(h)
	if err != nil {
		return err
	}
	res, err := call.AllocResults()
	if err != nil {
		return err
	}
	w, err := res.NewBlock()
	if err != nil {
		return err
	}
	return chainwire.WriteBlock(w, b)
}

func (c chainServer) HandleNotifications(_ context.Context, call schema.Chain_handleNotifications) error {
	listener := call.Args().Listener()
	if !listener.IsValid() {
		return errors.New("no listener given")
	}
	res, err := call.AllocResults()
	if err != nil {
		return err
	}
	sub := c.s.subscribe(listener.AddRef(), call.Args().FromHeight())
	return res.SetHandle(schema.NotificationHandle(protocol.NewServer(schema.NotificationHandle_Methods(nil, sub), sub, c.s.opts)))
}

// subscribe delivers blocks from height from on to listener, whose
// reference it takes over, until the returned subscription ends.
func (s *chainService) subscribe(listener schema.ChainNotifications, from uint64) *subscription {
	ctx, cancel := context.WithCancel(s.ctx)
	sub := &subscription{cancel: cancel, done: make(chan struct{})}
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		defer close(sub.done)
		defer listener.Release()
		s.log.Info("chain subscriber connected", "from_height", from)
		err := s.store.Follow(ctx, from, func(ctx context.Context, b chain.Block) error {
			fut, release := listener.BlockConnected(ctx, func(p schema.ChainNotifications_blockConnected_Params) error {
				w, err := p.NewBlock()
				if err != nil {
					return err
				}
				return chainwire.WriteBlock(w, b)
			})
			defer release()
			if err := protocol.Await(ctx, fut.Future); err != nil {
				return err
			}
			if _, err := fut.Struct(); err != nil {
				return fmt.Errorf("blockConnected(%d): %w", b.Height, err)
			}
			return nil
		})
		switch {
		case ctx.Err() != nil || errors.Is(err, chain.ErrClosed):
			s.log.Info("chain subscriber disconnected")
		case protocol.IsDisconnected(err):
			s.log.Info("chain subscriber went away", "err", err)
		default:
			s.log.Warn("chain subscriber dropped", "err", err)
		}
	}()
	return sub
}

// subscription is the NotificationHandle of one subscriber: disconnect,
// or the release of its last reference, ends it.
type subscription struct {
	cancel context.CancelFunc
	done   chan struct{} // closed when the delivering goroutine has ended
}

func (s *subscription) Disconnect(ctx context.Context, call schema.NotificationHandle_disconnect) error {
	call.Go()
	s.cancel()
	select {
	case <-s.done:
		return nil
	case <-ctx.Done():
		return context.Cause(ctx)
	}
}

func (s *subscription) Shutdown() { s.cancel() }
