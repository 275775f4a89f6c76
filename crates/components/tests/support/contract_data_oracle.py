#!/usr/bin/env python3
"""Independent oracle for the contract-data processor.

It decodes the same LedgerCloseMeta fixtures as the Rust processor, but with the Python
stellar-sdk XDR types, derives every CONTRACT_DATA ledger-entry change itself, and checks
the processor's JSON lines against that change for change. Nothing here comes from the
Rust code: the walk order, the SAC rules and the field formats follow the XDR definitions.

    python3 contract_data_oracle.py --passphrase P --records OUT.jsonl INPUT...
    python3 contract_data_oracle.py --passphrase P --dump INPUT...

INPUT formats, recognised by name (see shared/testdata/stellar/README.md):
  *.txt                                    one base64 LedgerCloseMeta per line
  *.xdr.zstd under loadtest/ or 'load-test' zstd stream of record-marked LedgerCloseMeta frames
  other *.xdr.zstd                         one zstd frame holding a LedgerCloseMetaBatch
  anything else                            lighthorizon: 4 zero bytes, then one LedgerCloseMeta

--dump prints the expected records (only the compared fields) as JSON lines on stdout and
the summary line on stderr. With --records the script exits 0 and prints one "ok: ..." line
when everything matches, else exits 1 after printing the first differences.

Needs: stellar-sdk; zstandard if installed, else the `zstd` command-line tool.
"""
import argparse
import base64
import datetime
import hashlib
import json
import os
import shutil
import struct
import subprocess
import sys

from stellar_sdk import StrKey, xdr

# Fields the Rust record carries that are compared. `key`, `val` (serde JSON of the ScVals)
# and `expiration_ledger_seq` are deliberately not compared: the first two are a Rust-crate
# JSON form, the last needs the TTL entries, which are not part of a contract-data change.
COMPARED_FIELDS = [
    "ledger_sequence", "closed_at", "change_index", "ledger_entry_change", "change_type",
    "deleted", "evicted", "contract_id", "contract_key_type", "contract_durability",
    "asset_code", "asset_issuer", "asset_type", "balance_holder", "balance",
    "last_modified_ledger", "ledger_key_hash", "key_xdr", "val_xdr",
    "contract_instance_type", "contract_instance_wasm_hash",
    "tx_hash", "transaction_index", "operation_index",
]
MAX_DIFFS = 10

CHANGE = xdr.LedgerEntryChangeType
CHANGE_NAMES = {
    CHANGE.LEDGER_ENTRY_CREATED: "created",
    CHANGE.LEDGER_ENTRY_UPDATED: "updated",
    CHANGE.LEDGER_ENTRY_REMOVED: "removed",
    CHANGE.LEDGER_ENTRY_RESTORED: "restored",
}


# ---------------------------------------------------------------------------------------
# Reading the fixtures
# ---------------------------------------------------------------------------------------

def zstd_decompress(path):
    """The whole decompressed content of a .zstd file (all frames)."""
    try:
        import zstandard
    except ImportError:
        zstandard = None
    if zstandard is not None:
        # stream_reader: these frames need not carry their content size.
        with open(path, "rb") as f:
            try:
                reader = zstandard.ZstdDecompressor().stream_reader(f, read_across_frames=True)
            except TypeError:  # zstandard < 0.15 has no read_across_frames
                reader = zstandard.ZstdDecompressor().stream_reader(f)
            return reader.read()
    if shutil.which("zstd") is None:
        sys.exit("error: neither the Python module 'zstandard' nor the 'zstd' tool is available")
    return subprocess.run(["zstd", "-dc", path], check=True, stdout=subprocess.PIPE).stdout


def ledgers_from_base64_lines(path):
    with open(path) as f:
        for line in f:
            if line.strip():
                yield xdr.LedgerCloseMeta.from_xdr(line.strip())


def ledgers_from_framed_stream(path):
    """XDR record marking (RFC 5531): a 4-byte header, high bit = last fragment of a record."""
    data = zstd_decompress(path)
    pos, record = 0, b""
    while pos < len(data):
        if pos + 4 > len(data):
            raise ValueError(f"{path}: truncated frame header at byte {pos}")
        (header,) = struct.unpack(">I", data[pos:pos + 4])
        size = header & 0x7FFFFFFF
        pos += 4
        if pos + size > len(data):
            raise ValueError(f"{path}: truncated frame at byte {pos}")
        record += data[pos:pos + size]
        pos += size
        if header & 0x80000000:
            yield xdr.LedgerCloseMeta.from_xdr_bytes(record)
            record = b""
    if record:
        raise ValueError(f"{path}: stream ends inside a record")


def ledgers_from_batch(path):
    batch = xdr.LedgerCloseMetaBatch.from_xdr_bytes(zstd_decompress(path))
    yield from batch.ledger_close_metas


def ledgers_from_lighthorizon(path):
    with open(path, "rb") as f:
        data = f.read()
    if data[:4] != b"\0\0\0\0":
        raise ValueError(f"{path}: expected a 4-byte zero version prefix")
    yield xdr.LedgerCloseMeta.from_xdr_bytes(data[4:])


def ledgers_from_input(path):
    name = os.path.basename(path)
    if name.endswith(".txt"):
        return ledgers_from_base64_lines(path)
    if name.endswith(".xdr.zstd"):
        parts = os.path.normpath(os.path.abspath(path)).split(os.sep)
        if "loadtest" in parts[:-1] or "load-test" in name:
            return ledgers_from_framed_stream(path)
        return ledgers_from_batch(path)
    return ledgers_from_lighthorizon(path)


# ---------------------------------------------------------------------------------------
# Names and encodings as the Rust record writes them
# ---------------------------------------------------------------------------------------

def go_enum_name(type_prefix, xdr_name):
    """Go's xdr enum constant name: type name + the XDR name in CamelCase
    (SCV_LEDGER_KEY_CONTRACT_INSTANCE -> ScValTypeScvLedgerKeyContractInstance)."""
    return type_prefix + "".join(part.capitalize() for part in xdr_name.split("_"))


def address_strkey(address):
    t = xdr.SCAddressType
    if address.type == t.SC_ADDRESS_TYPE_ACCOUNT:
        return StrKey.encode_ed25519_public_key(address.account_id.account_id.ed25519.uint256)
    if address.type == t.SC_ADDRESS_TYPE_CONTRACT:
        return StrKey.encode_contract(address.contract_id.contract_id.hash)
    if address.type == t.SC_ADDRESS_TYPE_MUXED_ACCOUNT:
        muxed = address.muxed_account
        payload = muxed.ed25519.uint256 + struct.pack(">Q", muxed.id.uint64)
        return StrKey.encode_med25519_public_key(payload)
    if address.type == t.SC_ADDRESS_TYPE_CLAIMABLE_BALANCE:
        # SEP-23: one type byte (V0 = 0) before the hash.
        cb = address.claimable_balance_id
        return StrKey.encode_claimable_balance(bytes([cb.type.value]) + cb.v0.hash)
    if address.type == t.SC_ADDRESS_TYPE_LIQUIDITY_POOL:
        return StrKey.encode_liquidity_pool(address.liquidity_pool_id.pool_id.hash)
    raise ValueError(f"unknown SCAddress type {address.type}")


def ledger_key_hash(contract, key, durability):
    ledger_key = xdr.LedgerKey(
        type=xdr.LedgerEntryType.CONTRACT_DATA,
        contract_data=xdr.LedgerKeyContractData(contract=contract, key=key, durability=durability),
    )
    return hashlib.sha256(ledger_key.to_xdr_bytes()).hexdigest()


def rfc3339_utc(unix_seconds):
    moment = datetime.datetime.fromtimestamp(unix_seconds, tz=datetime.timezone.utc)
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def i128_decimal(parts):
    # hi is the signed high half, lo the unsigned low half.
    return str((parts.hi.int64 << 64) + parts.lo.uint64)


# ---------------------------------------------------------------------------------------
# Stellar Asset Contract (SAC) recognition
# ---------------------------------------------------------------------------------------

def symbol_of(val):
    if val is not None and val.type == xdr.SCValType.SCV_SYMBOL:
        return val.sym.sc_symbol.decode("utf-8", "replace")
    return None


def map_entries(val):
    if val is None or val.type != xdr.SCValType.SCV_MAP or val.map is None:
        return None
    return val.map.sc_map


def map_lookup(entries, symbol):
    for entry in entries:
        if symbol_of(entry.key) == symbol:
            return entry.val
    return None


def sac_contract_id(network_id, asset):
    """sha256(XDR(HashIDPreimage::ContractId{network_id, FromAsset(asset)}))."""
    preimage = xdr.HashIDPreimage(
        type=xdr.EnvelopeType.ENVELOPE_TYPE_CONTRACT_ID,
        contract_id=xdr.HashIDPreimageContractID(
            network_id=xdr.Hash(network_id),
            contract_id_preimage=xdr.ContractIDPreimage(
                type=xdr.ContractIDPreimageType.CONTRACT_ID_PREIMAGE_FROM_ASSET,
                from_asset=asset,
            ),
        ),
    )
    return hashlib.sha256(preimage.to_xdr_bytes()).digest()


def asset_from_asset_info(info):
    """The Asset that a SAC instance's "AssetInfo" storage value names, with the record's
    (asset_type, asset_code, asset_issuer); None when the value has another shape."""
    if info is None or info.type != xdr.SCValType.SCV_VEC or info.vec is None:
        return None
    items = info.vec.sc_vec
    tag = symbol_of(items[0]) if items else None
    if tag == "Native" and len(items) == 1:
        return xdr.Asset(type=xdr.AssetType.ASSET_TYPE_NATIVE), ("native", None, None)
    if tag not in ("AlphaNum4", "AlphaNum12") or len(items) != 2:
        return None
    fields = map_entries(items[1])
    if fields is None:
        return None
    code, issuer = map_lookup(fields, "asset_code"), map_lookup(fields, "issuer")
    if code is None or code.type != xdr.SCValType.SCV_STRING:
        return None
    if issuer is None or issuer.type != xdr.SCValType.SCV_BYTES or len(issuer.bytes.sc_bytes) != 32:
        return None
    code_bytes, issuer_key = code.str.sc_string, issuer.bytes.sc_bytes
    width = 4 if tag == "AlphaNum4" else 12
    if not 1 <= len(code_bytes) <= width:
        return None
    account = xdr.AccountID(xdr.PublicKey(
        type=xdr.PublicKeyType.PUBLIC_KEY_TYPE_ED25519, ed25519=xdr.Uint256(issuer_key)))
    padded = code_bytes.ljust(width, b"\0")  # Asset codes are NUL-padded in XDR
    if tag == "AlphaNum4":
        asset = xdr.Asset(type=xdr.AssetType.ASSET_TYPE_CREDIT_ALPHANUM4,
                          alpha_num4=xdr.AlphaNum4(xdr.AssetCode4(padded), account))
        kind = "credit_alphanum4"
    else:
        asset = xdr.Asset(type=xdr.AssetType.ASSET_TYPE_CREDIT_ALPHANUM12,
                          alpha_num12=xdr.AlphaNum12(xdr.AssetCode12(padded), account))
        kind = "credit_alphanum12"
    return asset, (kind, code_bytes.decode("utf-8", "replace"),
                   StrKey.encode_ed25519_public_key(issuer_key))


def sac_asset(contract, key, val, network_id):
    """(asset_type, asset_code, asset_issuer) of a genuine SAC instance entry, else Nones.
    Genuine: the contract id is the asset's SAC id under this network's passphrase."""
    none = (None, None, None)
    if key.type != xdr.SCValType.SCV_LEDGER_KEY_CONTRACT_INSTANCE or val is None:
        return none
    if val.type != xdr.SCValType.SCV_CONTRACT_INSTANCE:
        return none
    instance = val.instance
    if instance.executable.type != xdr.ContractExecutableType.CONTRACT_EXECUTABLE_STELLAR_ASSET:
        return none
    if instance.storage is None or contract.type != xdr.SCAddressType.SC_ADDRESS_TYPE_CONTRACT:
        return none
    found = asset_from_asset_info(map_lookup(instance.storage.sc_map, "AssetInfo"))
    if found is None:
        return none
    asset, fields = found
    if sac_contract_id(network_id, asset) != contract.contract_id.contract_id.hash:
        return none
    return fields


def sac_balance(key, val):
    """(balance_holder, balance) of a key Vec[Symbol "Balance", Address] whose value is a
    map with exactly amount: I128, authorized: Bool, clawback: Bool; else Nones."""
    none = (None, None)
    if val is None or key.type != xdr.SCValType.SCV_VEC or key.vec is None:
        return none
    items = key.vec.sc_vec
    if len(items) != 2 or symbol_of(items[0]) != "Balance":
        return none
    if items[1].type != xdr.SCValType.SCV_ADDRESS:
        return none
    entries = map_entries(val)
    if entries is None or len(entries) != 3:
        return none
    if sorted(symbol_of(e.key) or "" for e in entries) != ["amount", "authorized", "clawback"]:
        return none
    amount = map_lookup(entries, "amount")
    if amount.type != xdr.SCValType.SCV_I128:
        return none
    for flag in ("authorized", "clawback"):
        if map_lookup(entries, flag).type != xdr.SCValType.SCV_BOOL:
            return none
    return address_strkey(items[1].address), i128_decimal(amount.i128)


# ---------------------------------------------------------------------------------------
# Building one record
# ---------------------------------------------------------------------------------------

def make_record(ctx, change_name, contract, key, durability, val, last_modified, evicted=False):
    """The expected record; ctx holds ledger/tx/op position fields and the network id."""
    instance_type = wasm_hash = None
    if val is not None and val.type == xdr.SCValType.SCV_CONTRACT_INSTANCE:
        executable = val.instance.executable
        instance_type = go_enum_name("ContractExecutableType", executable.type.name)
        if executable.type == xdr.ContractExecutableType.CONTRACT_EXECUTABLE_WASM:
            wasm_hash = executable.wasm_hash.hash.hex()
    asset_type, asset_code, asset_issuer = sac_asset(contract, key, val, ctx["network_id"])
    holder, balance = sac_balance(key, val)
    change_code = {"created": 0, "updated": 1, "removed": 2, "restored": 4}[change_name]
    return {
        "ledger_sequence": ctx["ledger_sequence"],
        "closed_at": ctx["closed_at"],
        "change_index": ctx["next_index"],
        "ledger_entry_change": change_code,
        "change_type": change_name,
        "deleted": change_name == "removed",
        "evicted": evicted,
        "contract_id": address_strkey(contract),
        "contract_key_type": go_enum_name("ScValType", key.type.name),
        "contract_durability": go_enum_name("ContractDataDurability", durability.name),
        "asset_code": asset_code,
        "asset_issuer": asset_issuer,
        "asset_type": asset_type,
        "balance_holder": holder,
        "balance": balance,
        "last_modified_ledger": last_modified,
        "ledger_key_hash": ledger_key_hash(contract, key, durability),
        "key_xdr": key.to_xdr(),
        "val_xdr": val.to_xdr() if val is not None else None,
        "contract_instance_type": instance_type,
        "contract_instance_wasm_hash": wasm_hash,
        "tx_hash": ctx["tx_hash"],
        "transaction_index": ctx["transaction_index"],
        "operation_index": ctx["operation_index"],
    }


def entry_record(ctx, change_name, entry):
    data = entry.data.contract_data
    return make_record(ctx, change_name, data.contract, data.key, data.durability, data.val,
                       entry.last_modified_ledger_seq.uint32)


def is_contract_data_entry(entry):
    return entry is not None and entry.data.type == xdr.LedgerEntryType.CONTRACT_DATA


def records_from_changes(ctx, changes, out, warnings):
    """Append the contract-data changes of one LedgerEntryChanges list. A STATE entry is
    only the pre-image of the UPDATED/REMOVED that follows it, never a change itself."""
    state = None
    for change in changes.ledger_entry_changes:
        kind = change.type
        if kind == CHANGE.LEDGER_ENTRY_STATE:
            state = change.state
            continue
        if kind == CHANGE.LEDGER_ENTRY_REMOVED:
            if change.removed.type == xdr.LedgerEntryType.CONTRACT_DATA:
                out.append(removed_record(ctx, change.removed, state, warnings))
                ctx["next_index"] += 1
        else:
            entry = {CHANGE.LEDGER_ENTRY_CREATED: change.created,
                     CHANGE.LEDGER_ENTRY_UPDATED: change.updated,
                     CHANGE.LEDGER_ENTRY_RESTORED: change.restored}[kind]
            if is_contract_data_entry(entry):
                out.append(entry_record(ctx, CHANGE_NAMES[kind], entry))
                ctx["next_index"] += 1
        state = None  # a pre-image belongs to the one change right after it


def removed_record(ctx, removed_key, state, warnings):
    """A removal is described by its pre-image (key, val, last_modified). Without one (never
    expected in core's meta) only the key is known, as for an eviction."""
    key = removed_key.contract_data
    if is_contract_data_entry(state) and ledger_key_of(state) == removed_key.to_xdr_bytes():
        return entry_record(ctx, "removed", state)
    warnings.append(f"ledger {ctx['ledger_sequence']} change {ctx['next_index']}: "
                    "REMOVED contract data without a matching STATE pre-image")
    return make_record(ctx, "removed", key.contract, key.key, key.durability, None, None)


def ledger_key_of(entry):
    data = entry.data.contract_data
    return xdr.LedgerKey(
        type=xdr.LedgerEntryType.CONTRACT_DATA,
        contract_data=xdr.LedgerKeyContractData(data.contract, data.key, data.durability),
    ).to_xdr_bytes()


# ---------------------------------------------------------------------------------------
# Walking one ledger in the processor's order
# ---------------------------------------------------------------------------------------

def meta_change_lists(meta):
    """(operation_index or None, LedgerEntryChanges) of a TransactionMeta, in apply order."""
    if meta.v == 0:
        return [(i, op.changes) for i, op in enumerate(meta.operations, 1)]
    if meta.v == 1:
        body = meta.v1
        return [(None, body.tx_changes)] + [(i, op.changes) for i, op in enumerate(body.operations, 1)]
    body = {2: meta.v2, 3: meta.v3, 4: meta.v4}[meta.v]
    return ([(None, body.tx_changes_before)]
            + [(i, op.changes) for i, op in enumerate(body.operations, 1)]
            + [(None, body.tx_changes_after)])


def ledger_records(lcm, network_id, warnings):
    body = {0: lcm.v0, 1: lcm.v1, 2: lcm.v2}[lcm.v]
    header = body.ledger_header.header
    ctx = {
        "network_id": network_id,
        "ledger_sequence": header.ledger_seq.uint32,
        "closed_at": rfc3339_utc(header.scp_value.close_time.time_point.uint64),
        "next_index": 0,
    }
    out = []

    def at(tx_hash=None, tx_index=None, op_index=None):
        ctx.update(tx_hash=tx_hash, transaction_index=tx_index, operation_index=op_index)

    # 1. Transactions in apply order: fees, then the meta, then (LCM V2) post-apply fees.
    for tx_index, tx in enumerate(body.tx_processing, 1):
        tx_hash = tx.result.transaction_hash.hash.hex()
        at(tx_hash, tx_index)
        records_from_changes(ctx, tx.fee_processing, out, warnings)
        for op_index, changes in meta_change_lists(tx.tx_apply_processing):
            at(tx_hash, tx_index, op_index)
            records_from_changes(ctx, changes, out, warnings)
        if lcm.v == 2:
            at(tx_hash, tx_index)
            records_from_changes(ctx, tx.post_tx_apply_fee_processing, out, warnings)

    # 2. Evictions (LCM V1/V2): only the key is known.
    at()
    for key in (body.evicted_keys if lcm.v >= 1 else []):
        if key.type == xdr.LedgerEntryType.CONTRACT_DATA:
            k = key.contract_data
            out.append(make_record(ctx, "removed", k.contract, k.key, k.durability, None, None,
                                   evicted=True))
            ctx["next_index"] += 1

    # 3. Protocol upgrades, applied last.
    for upgrade in body.upgrades_processing:
        records_from_changes(ctx, upgrade.changes, out, warnings)
    return out


# ---------------------------------------------------------------------------------------
# Summary and comparison
# ---------------------------------------------------------------------------------------

def summary(ledger_count, records):
    counts = {name: 0 for name in ("created", "updated", "removed", "restored", "evicted")}
    for r in records:
        counts["evicted" if r["evicted"] else r["change_type"]] += 1
    balances = sum(1 for r in records if r["balance"] is not None)
    instances = sum(1 for r in records if r["asset_type"] is not None)
    detail = ", ".join(f"{name} {n}" for name, n in counts.items())
    return (f"{ledger_count} ledgers, {len(records)} changes ({detail}), "
            f"{balances} SAC balances, {instances} SAC instances")


def same(expected, found):
    # Strict: JSON true must not pass for 1, nor "5" for 5.
    return type(expected) is type(found) and expected == found


def read_records(path):
    records = []
    with open(path) as f:
        for number, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as e:
                sys.exit(f"error: {path}:{number}: not JSON: {e}")
            if not isinstance(record, dict):
                sys.exit(f"error: {path}:{number}: not a JSON object")
            records.append(record)
    return records


def compare(expected, found):
    """A list of difference lines (empty when everything matches). Records are paired by
    (ledger_sequence, change_index); order is checked separately."""
    problems, diffs = [], []

    def ident(r):
        return (r.get("ledger_sequence"), r.get("change_index"))

    found_by_id = {}
    duplicates = []
    for r in found:
        if ident(r) in found_by_id:
            duplicates.append(ident(r))
        found_by_id[ident(r)] = r
    expected_ids = [ident(r) for r in expected]
    expected_set = set(expected_ids)
    missing = [i for i in expected_ids if i not in found_by_id]
    extra = [i for i in found_by_id if i not in expected_set]

    for want in expected:
        got = found_by_id.get(ident(want))
        if got is None:
            continue
        for field in COMPARED_FIELDS:
            if field not in got:
                diffs.append((ident(want), field, want[field], "<key absent>"))
            elif not same(want[field], got[field]):
                diffs.append((ident(want), field, want[field], got[field]))
        for field in ("key", "val", "expiration_ledger_seq"):
            if field not in got:
                diffs.append((ident(want), field, "<present>", "<key absent>"))

    for (ledger, index), field, want, got in diffs[:MAX_DIFFS]:
        problems.append(f"ledger {ledger} change {index}: {field}: expected {json.dumps(want)}, "
                        f"found {json.dumps(got)}")
    if len(diffs) > MAX_DIFFS:
        problems.append(f"... {len(diffs) - MAX_DIFFS} more field differences")

    # Order: the common records must appear in the expected order.
    common = [i for i in expected_ids if i in found_by_id]
    found_order = [ident(r) for r in found if ident(r) in expected_set]
    out_of_order = [(pos, w, g) for pos, (w, g) in enumerate(zip(common, found_order)) if w != g]
    for pos, want, got in out_of_order[:MAX_DIFFS]:
        problems.append(f"order: record {pos} should be ledger {want[0]} change {want[1]}, "
                        f"found ledger {got[0]} change {got[1]}")
    if len(out_of_order) > MAX_DIFFS:
        problems.append(f"... {len(out_of_order) - MAX_DIFFS} more records out of order")

    if missing:
        problems.append(f"missing: {len(missing)} expected records not found, first: "
                        + ", ".join(f"ledger {l} change {i}" for l, i in missing[:MAX_DIFFS]))
    if extra:
        problems.append(f"extra: {len(extra)} records not expected, first: "
                        + ", ".join(f"ledger {l} change {i}" for l, i in extra[:MAX_DIFFS]))
    if duplicates:
        problems.append(f"duplicates: {len(duplicates)} records repeat a (ledger, change_index), "
                        f"first: {duplicates[:MAX_DIFFS]}")
    return problems


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--passphrase", required=True, help="network passphrase of the inputs")
    mode = parser.add_mutually_exclusive_group(required=True)
    mode.add_argument("--records", help="JSON lines written by the Rust processor")
    mode.add_argument("--dump", action="store_true", help="print the expected records")
    parser.add_argument("inputs", nargs="+", metavar="INPUT")
    args = parser.parse_args()

    network_id = hashlib.sha256(args.passphrase.encode()).digest()
    expected, warnings, ledger_count = [], [], 0
    for path in args.inputs:
        for lcm in ledgers_from_input(path):
            expected.extend(ledger_records(lcm, network_id, warnings))
            ledger_count += 1
    for w in warnings:
        print(f"warning: {w}", file=sys.stderr)

    if args.dump:
        for r in expected:
            print(json.dumps(r))
        print(f"ok: {summary(ledger_count, expected)}", file=sys.stderr)
        return 0

    problems = compare(expected, read_records(args.records))
    if problems:
        print(f"FAIL: expected {summary(ledger_count, expected)}")
        for p in problems:
            print(p)
        return 1
    print(f"ok: {summary(ledger_count, expected)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
