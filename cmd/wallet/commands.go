package main

import (
	"context"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strconv"
	"time"

	schema "github.com/gomultiprocess/multiprocess/internal/capnpschema"
	"github.com/gomultiprocess/multiprocess/internal/chain"
)

// commandTimeout bounds one command, connection included.
const commandTimeout = 60 * time.Second

// commandNames lists the commands, for the usage text and errors.
const commandNames = "getbalance, getnewaddress, listtransactions, listwallets, generate N"

// command is one parsed command line.
type command struct {
	name   string
	count  uint32 // generate's N
	wallet string // -wallet
	json   bool   // -json
}

func parseCommand(args []string, wallet string, asJSON bool) (command, error) {
	c := command{name: args[0], wallet: wallet, json: asJSON}
	want := 0
	switch c.name {
	case "getbalance", "getnewaddress", "listtransactions", "listwallets":
	case "generate":
		want = 1
	default:
		return c, fmt.Errorf("unknown command %q (known: %s)", c.name, commandNames)
	}
	if len(args)-1 != want {
		return c, fmt.Errorf("%s takes %d argument(s), got %d", c.name, want, len(args)-1)
	}
	if c.name == "generate" {
		n, err := strconv.ParseUint(args[1], 10, 32)
		if err != nil || n == 0 {
			return c, fmt.Errorf("generate: %q is not a positive number of blocks", args[1])
		}
		c.count = uint32(n)
	}
	return c, nil
}

// run carries out c against the node behind init and writes the result
// to out: one line per fact for people, or one JSON value with -json.
func (c command) run(ctx context.Context, init schema.Init, out io.Writer) error {
	node, err := makeNode(ctx, init)
	if err != nil {
		return err
	}
	defer node.Release()
	loader, err := walletLoader(ctx, node)
	if err != nil {
		return err
	}
	defer loader.Release()
	if c.name == "listwallets" {
		return c.listWallets(ctx, loader, out)
	}
	wallet, err := loadWallet(ctx, loader, c.wallet)
	if err != nil {
		return err
	}
	defer wallet.Release()
	switch c.name {
	case "getbalance":
		return c.getBalance(ctx, wallet, out)
	case "getnewaddress":
		addr, err := newAddress(ctx, wallet)
		if err != nil {
			return err
		}
		return c.print(out, map[string]string{"address": addr}, addr)
	case "listtransactions":
		return c.listTransactions(ctx, wallet, out)
	case "generate":
		return c.generate(ctx, node, wallet, out)
	}
	return fmt.Errorf("unknown command %q", c.name)
}

// print writes v as JSON with -json, else the lines.
func (c command) print(out io.Writer, v any, lines ...string) error {
	if c.json {
		enc := json.NewEncoder(out)
		enc.SetIndent("", "  ")
		return enc.Encode(v)
	}
	for _, l := range lines {
		if _, err := fmt.Fprintln(out, l); err != nil {
			return err
		}
	}
	return nil
}

func makeNode(ctx context.Context, init schema.Init) (schema.Node, error) {
	fut, release := init.MakeNode(ctx, nil)
	defer release()
	res, err := fut.Struct()
	if err != nil {
		return schema.Node{}, fmt.Errorf("makeNode: %w", err)
	}
	return res.Node().AddRef(), nil
}

// walletLoader returns the node's wallet loader: a capability of the
// wallet process that the node forwards.
func walletLoader(ctx context.Context, node schema.Node) (schema.WalletLoader, error) {
	fut, release := node.WalletLoader(ctx, nil)
	defer release()
	res, err := fut.Struct()
	if err != nil {
		return schema.WalletLoader{}, fmt.Errorf("walletLoader: %w", err)
	}
	return res.Loader().AddRef(), nil
}

func loadWallet(ctx context.Context, loader schema.WalletLoader, name string) (schema.Wallet, error) {
	fut, release := loader.LoadWallet(ctx, func(p schema.WalletLoader_loadWallet_Params) error { return p.SetName(name) })
	defer release()
	res, err := fut.Struct()
	if err != nil {
		return schema.Wallet{}, fmt.Errorf("loadWallet %q: %w", name, err)
	}
	return res.Wallet().AddRef(), nil
}

func newAddress(ctx context.Context, wallet schema.Wallet) (string, error) {
	fut, release := wallet.GetNewAddress(ctx, nil)
	defer release()
	res, err := fut.Struct()
	if err != nil {
		return "", fmt.Errorf("getNewAddress: %w", err)
	}
	return res.Address()
}

func (c command) listWallets(ctx context.Context, loader schema.WalletLoader, out io.Writer) error {
	fut, release := loader.ListWallets(ctx, nil)
	defer release()
	res, err := fut.Struct()
	if err != nil {
		return fmt.Errorf("listWallets: %w", err)
	}
	list, err := res.Names()
	if err != nil {
		return err
	}
	names := make([]string, 0, list.Len())
	for i := 0; i < list.Len(); i++ {
		n, err := list.At(i)
		if err != nil {
			return err
		}
		names = append(names, n)
	}
	return c.print(out, names, names...)
}

func (c command) getBalance(ctx context.Context, wallet schema.Wallet, out io.Writer) error {
	fut, release := wallet.GetBalance(ctx, nil)
	defer release()
	res, err := fut.Struct()
	if err != nil {
		return fmt.Errorf("getBalance: %w", err)
	}
	hash, err := res.BlockHash()
	if err != nil {
		return err
	}
	v := struct {
		Balance   int64  `json:"balance"`
		Unit      string `json:"unit"`
		Height    uint64 `json:"height"`
		BlockHash string `json:"blockhash"`
	}{res.Balance(), chain.Unit, res.Height(), hex.EncodeToString(hash)}
	return c.print(out, v,
		"balance: "+chain.FormatAmount(v.Balance),
		fmt.Sprintf("as of block: %d %s", v.Height, v.BlockHash))
}

func (c command) listTransactions(ctx context.Context, wallet schema.Wallet, out io.Writer) error {
	fut, release := wallet.ListTransactions(ctx, nil)
	defer release()
	res, err := fut.Struct()
	if err != nil {
		return fmt.Errorf("listTransactions: %w", err)
	}
	list, err := res.Transactions()
	if err != nil {
		return err
	}
	type tx struct {
		Height    uint64 `json:"height"`
		BlockHash string `json:"blockhash"`
		Address   string `json:"address"`
		Amount    int64  `json:"amount"`
		Unit      string `json:"unit"`
		Time      string `json:"time"`
	}
	txs := make([]tx, 0, list.Len())
	lines := make([]string, 0, list.Len())
	for i := 0; i < list.Len(); i++ {
		e := list.At(i)
		hash, err := e.BlockHash()
		if err != nil {
			return err
		}
		addr, err := e.Address()
		if err != nil {
			return err
		}
		t := tx{e.Height(), hex.EncodeToString(hash), addr, e.Amount(), chain.Unit,
			time.Unix(0, e.TimeUnixNano()).UTC().Format(time.RFC3339)}
		txs = append(txs, t)
		lines = append(lines, fmt.Sprintf("block %d: received %s at %s", t.Height, chain.FormatAmount(t.Amount), t.Address))
	}
	return c.print(out, txs, lines...)
}

// generate asks the wallet for a new address and the node for count
// blocks paying it.
func (c command) generate(ctx context.Context, node schema.Node, wallet schema.Wallet, out io.Writer) error {
	addr, err := newAddress(ctx, wallet)
	if err != nil {
		return err
	}
	fut, release := node.GenerateBlocks(ctx, func(p schema.Node_generateBlocks_Params) error {
		p.SetCount(c.count)
		return p.SetAddress(addr)
	})
	defer release()
	res, err := fut.Struct()
	if err != nil {
		return fmt.Errorf("generateBlocks: %w", err)
	}
	list, err := res.Hashes()
	if err != nil {
		return err
	}
	if list.Len() == 0 {
		return errors.New("generateBlocks returned no blocks")
	}
	hashes := make([]string, 0, list.Len())
	lines := []string{fmt.Sprintf("paid %s per block to %s", chain.FormatAmount(chain.Reward), addr)}
	for i := 0; i < list.Len(); i++ {
		h, err := list.At(i)
		if err != nil {
			return err
		}
		hashes = append(hashes, hex.EncodeToString(h))
		lines = append(lines, "block "+hashes[i])
	}
	v := struct {
		Address string   `json:"address"`
		Reward  int64    `json:"reward"`
		Unit    string   `json:"unit"`
		Blocks  []string `json:"blocks"`
	}{addr, chain.Reward, chain.Unit, hashes}
	return c.print(out, v, lines...)
}
