package wallet

import (
	"context"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strconv"
	"time"

	"github.com/gomultiprocess/multiprocess/internal/chain"
	"github.com/gomultiprocess/multiprocess/mp"
	"github.com/gomultiprocess/multiprocess/schema"
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
	node, err := init.MakeNode(ctx)
	if err != nil {
		return err
	}
	defer mp.Release(node)
	loader, err := node.WalletLoader(ctx)
	if err != nil {
		return err
	}
	defer mp.Release(loader)
	if c.name == "listwallets" {
		names, err := loader.ListWallets(ctx)
		if err != nil {
			return err
		}
		return c.print(out, names, names...)
	}
	wallet, err := loader.LoadWallet(ctx, c.wallet)
	if err != nil {
		return err
	}
	defer mp.Release(wallet)
	switch c.name {
	case "getbalance":
		return c.getBalance(ctx, wallet, out)
	case "getnewaddress":
		addr, err := wallet.GetNewAddress(ctx)
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

func (c command) getBalance(ctx context.Context, wallet schema.Wallet, out io.Writer) error {
	res, err := wallet.GetBalance(ctx, 0)
	if err != nil {
		return err
	}
	v := struct {
		Balance   int64  `json:"balance"`
		Unit      string `json:"unit"`
		Height    uint64 `json:"height"`
		BlockHash string `json:"blockhash"`
	}{res.Balance, chain.Unit, res.Height, hex.EncodeToString(res.BlockHash)}
	return c.print(out, v,
		"balance: "+chain.FormatAmount(v.Balance),
		fmt.Sprintf("as of block: %d %s", v.Height, v.BlockHash))
}

func (c command) listTransactions(ctx context.Context, wallet schema.Wallet, out io.Writer) error {
	list, err := wallet.ListTransactions(ctx)
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
	txs := make([]tx, 0, len(list))
	lines := make([]string, 0, len(list))
	for _, e := range list {
		t := tx{e.Height, hex.EncodeToString(e.BlockHash), e.Address, e.Amount, chain.Unit,
			time.Unix(0, e.TimeUnixNano).UTC().Format(time.RFC3339)}
		txs = append(txs, t)
		lines = append(lines, fmt.Sprintf("block %d: received %s at %s", t.Height, chain.FormatAmount(t.Amount), t.Address))
	}
	return c.print(out, txs, lines...)
}

// generate asks the wallet for a new address and the node for count
// blocks paying it.
func (c command) generate(ctx context.Context, node schema.Node, wallet schema.Wallet, out io.Writer) error {
	addr, err := wallet.GetNewAddress(ctx)
	if err != nil {
		return err
	}
	list, err := node.GenerateBlocks(ctx, c.count, addr)
	if err != nil {
		return err
	}
	if len(list) == 0 {
		return errors.New("generateBlocks returned no blocks")
	}
	hashes := make([]string, len(list))
	lines := []string{fmt.Sprintf("paid %s per block to %s", chain.FormatAmount(chain.Reward), addr)}
	for i, h := range list {
		hashes[i] = hex.EncodeToString(h)
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
