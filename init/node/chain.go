package node

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"

	"github.com/gomultiprocess/multiprocess/internal/chain"
	"github.com/gomultiprocess/multiprocess/internal/chainwire"
	"github.com/gomultiprocess/multiprocess/mp"
	"github.com/gomultiprocess/multiprocess/schema"
)

// chainService serves the chain store over IPC and owns the goroutines
// that deliver blocks to subscribers (Chain.handleNotifications).
type chainService struct {
	// One chain serves every connection: its calls run concurrently
	// (see package mp's ordering rule); the store has its own locks.
	mp.ConcurrentCalls

	store *chain.Store
	log   *slog.Logger

	// ctx ends every subscription when the service stops; wg owns their
	// goroutines.
	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup
}

var _ schema.Chain = (*chainService)(nil)

func newChainService(store *chain.Store, log *slog.Logger) *chainService {
	ctx, cancel := context.WithCancel(context.Background())
	return &chainService{store: store, log: log, ctx: ctx, cancel: cancel}
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

// Height returns the height of the chain's tip.
func (s *chainService) Height(context.Context) (uint64, error) {
	return s.store.Tip().Height, nil
}

// BlockHash returns the hash of the block at height.
func (s *chainService) BlockHash(_ context.Context, height uint64) ([]byte, error) {
	b, err := s.store.BlockAt(height)
	if err != nil {
		return nil, err
	}
	return b.Hash[:], nil
}

// Block returns the block with the given hash.
func (s *chainService) Block(_ context.Context, hash []byte) (*schema.Block, error) {
	h, err := chain.HashFromBytes(hash)
	if err != nil {
		return nil, err
	}
	b, err := s.store.BlockByHash(h)
	if err != nil {
		return nil, err
	}
	return chainwire.ToWire(b), nil
}

// HandleNotifications delivers every block from fromHeight on to
// listener, one blockConnected call at a time, until the returned handle
// is released or disconnected.
func (s *chainService) HandleNotifications(_ context.Context, listener schema.ChainNotifications, fromHeight uint64) (schema.NotificationHandle, error) {
	if listener == nil {
		return nil, errors.New("no listener given")
	}
	// The listener is a parameter, borrowed for this call: the
	// subscription keeps a reference of its own.
	return s.subscribe(mp.Retain(listener), fromHeight), nil
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
		defer mp.Release(listener)
		s.log.Debug("chain subscriber connected", "from_height", from)
		err := s.store.Follow(ctx, from, func(ctx context.Context, b chain.Block) error {
			if err := listener.BlockConnected(ctx, chainwire.ToWire(b)); err != nil {
				return fmt.Errorf("blockConnected(%d): %w", b.Height, err)
			}
			return nil
		})
		switch {
		case ctx.Err() != nil || errors.Is(err, chain.ErrClosed):
			s.log.Debug("chain subscriber disconnected")
		case errors.Is(err, mp.ErrDisconnected):
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

// Disconnect ends the subscription and returns once no blockConnected
// call is running for it.
func (s *subscription) Disconnect(ctx context.Context) error {
	s.cancel()
	select {
	case <-s.done:
		return nil
	case <-ctx.Done():
		return context.Cause(ctx)
	}
}

// CapabilityReleased ends the subscription when its last reference goes.
func (s *subscription) CapabilityReleased() { s.cancel() }
