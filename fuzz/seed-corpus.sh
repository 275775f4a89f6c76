#!/bin/sh
# Seeds fuzz/corpus/ from the Stellar fixtures: raw ledgers for ledger_xdr, whole files
# for input_file. Usage: ./seed-corpus.sh PATH/TO/shared/testdata/stellar
set -eu
src=${1:?usage: $0 PATH/TO/shared/testdata/stellar}
here=$(cd "$(dirname "$0")" && pwd)
mkdir -p "$here/corpus/ledger_xdr" "$here/corpus/input_file"
for f in "$src"/testnet/lighthorizon-1410048-1410367/ledgers/*; do
    # Drop the 4-byte version prefix: ledger_xdr takes bare LedgerCloseMeta XDR.
    tail -c +5 "$f" > "$here/corpus/ledger_xdr/$(basename "$f")"
done
cp "$src"/testnet/lighthorizon-1410048-1410367/ledgers/1410048 "$here/corpus/input_file/raw-prefixed"
cp "$src"/pubnet/ttp-example/ledgers-base64.txt "$here/corpus/input_file/base64-lines"
cp "$src"/testnet/datastore/FFFFFFFF--0-63999/*.xdr.zstd "$here/corpus/input_file/"
cp "$src"/loadtest/load-test-ledgers-v22.xdr.zstd "$here/corpus/input_file/frames-v22"
