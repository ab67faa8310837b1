# Wallet: what the wallet process serves: a loader for named wallets and
# the wallets themselves.
@0xc0a2187528cd7e82;

using Go = import "/go.capnp";
$Go.package("capnpschema");
$Go.import("github.com/gomultiprocess/multiprocess/internal/capnpschema");

struct WalletSettings {
  # What the node tells the wallet process about where it runs.
  dataDir @0 :Text;  # wallets live in <dataDir>/wallets/<name>.db
}

struct WalletTransaction {
  # A payout that the wallet received.
  height @0 :UInt64;
  blockHash @1 :Data;
  address @2 :Text;
  amount @3 :Int64;   # in the smallest unit
  timeUnixNano @4 :Int64;
}

interface WalletLoader {
  createWallet @0 (name :Text) -> (wallet :Wallet);
  # createWallet creates the wallet name and loads it; an error if it
  # exists.

  loadWallet @1 (name :Text) -> (wallet :Wallet);
  # loadWallet loads the existing wallet name, or returns it if it is
  # loaded already; an error if it does not exist or another process has
  # it open.

  listWallets @2 () -> (names :List(Text));
  # listWallets returns the names of the loaded wallets, sorted.

  getWallet @3 (name :Text) -> (wallet :Wallet);
  # getWallet returns the loaded wallet name, without loading it: an
  # error if it is not loaded (or does not exist).
}

interface Wallet {
  getNewAddress @0 () -> (address :Text);
  # getNewAddress returns a new receiving address of this wallet.

  getBalance @1 (atHeight :UInt64) -> (balance :Int64, height :UInt64, blockHash :Data);
  # getBalance returns the sum of what the wallet received, in the
  # smallest unit, once the wallet has applied every block up to the
  # chain's tip as it was when the call arrived, with the height and hash
  # of the last block applied. With atHeight above 0 it returns instead the
  # balance right after block atHeight, once the wallet has applied it, and
  # that block's height and hash.

  listTransactions @2 () -> (transactions :List(WalletTransaction));
  # listTransactions returns what the wallet received, oldest first, once
  # it has caught up with the chain's tip as getBalance does.

  name @3 () -> (name :Text);
  # name returns the wallet's name.
}
