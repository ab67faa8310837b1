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

// commandNames lists the commands, for errors.
const commandNames = "getbalance, getnewaddress, listtransactions, listwallets, loadwallet NAME, createwallet NAME, generate N, stop"

// command is one parsed command line.
type command struct {
	name   string
	count  uint32 // generate's N
	wallet string // -wallet, or loadwallet's and createwallet's NAME
	json   bool   // -json
}

// walletArg is the wallet the command names.
func (c command) walletArg() string { return c.wallet }

func parseCommand(args []string, wallet string, asJSON bool) (command, error) {
	c := command{name: args[0], wallet: wallet, json: asJSON}
	want, what := 0, ""
	switch c.name {
	case "getbalance", "getnewaddress", "listtransactions", "listwallets", "stop":
	case "generate":
		want, what = 1, "N, the number of blocks"
	case "loadwallet", "createwallet":
		want, what = 1, "NAME, the wallet's name"
	default:
		return c, fmt.Errorf("unknown command %q (the commands: %s)", c.name, commandNames)
	}
	switch {
	case len(args)-1 < want:
		return c, fmt.Errorf("%s needs %s", c.name, what)
	case len(args)-1 > want && want == 0:
		return c, fmt.Errorf("%s takes no argument, got %q (options go before or after the command: -wallet=NAME)", c.name, args[1])
	case len(args)-1 > want:
		return c, fmt.Errorf("%s takes one argument, %s, got %d", c.name, what, len(args)-1)
	}
	switch c.name {
	case "generate":
		n, err := strconv.ParseUint(args[1], 10, 32)
		if err != nil || n == 0 || n > 1000 {
			return c, fmt.Errorf("generate: %q is not a number of blocks from 1 to 1000", args[1])
		}
		c.count = uint32(n)
	case "loadwallet", "createwallet":
		if err := CheckName(args[1]); err != nil {
			return c, fmt.Errorf("%s: %v", c.name, err)
		}
		c.wallet = args[1]
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
	if c.name == "stop" {
		if err := node.Stop(ctx); err != nil {
			return err
		}
		return c.print(out, map[string]string{"result": "the node is stopping"}, "the node is stopping")
	}
	loader, err := node.WalletLoader(ctx)
	if err != nil {
		return err
	}
	defer mp.Release(loader)
	var wallet schema.Wallet
	switch c.name {
	case "listwallets":
		names, err := loader.ListWallets(ctx)
		if err != nil {
			return err
		}
		return c.print(out, names, names...)
	case "loadwallet":
		wallet, err = loader.LoadWallet(ctx, c.wallet)
	case "createwallet":
		wallet, err = loader.CreateWallet(ctx, c.wallet)
	default:
		// Loading is explicit: a command on a wallet that is not
		// loaded says how to load it.
		wallet, err = loader.GetWallet(ctx, c.wallet)
	}
	if err != nil {
		return err
	}
	defer mp.Release(wallet)
	switch c.name {
	case "loadwallet", "createwallet":
		verb := map[string]string{"loadwallet": "loaded", "createwallet": "created and loaded"}[c.name]
		return c.print(out, map[string]string{"name": c.wallet}, fmt.Sprintf("wallet %s %s", c.wallet, verb))
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
