"""The golden JSON shape of an Arrow event row: the protojson mapping of TokenTransferEvent
that Stellar's Go processor writes (../shared/testdata/stellar/README.md), from a row of the
flat event schema (a dict from pyarrow's or DuckDB's reader).
"""
import base64


def golden_shape(row):
    meta = {
        "ledgerSequence": row["ledger_sequence"],
        "closedAt": row["closed_at"].strftime("%Y-%m-%dT%H:%M:%SZ"),
        "txHash": row["tx_hash"],
        "transactionIndex": row["transaction_index"],
    }
    if row["operation_index"] is not None:
        meta["operationIndex"] = row["operation_index"]
    meta["contractAddress"] = row["contract_id"]
    if row["to_muxed_id"] is not None:
        meta["toMuxedInfo"] = {"id": str(row["to_muxed_id"])}
    elif row["to_muxed_text"] is not None:
        meta["toMuxedInfo"] = {"text": row["to_muxed_text"]}
    elif row["to_muxed_hash"] is not None:
        meta["toMuxedInfo"] = {"hash": base64.b64encode(row["to_muxed_hash"]).decode()}
    body = {}
    if row["from"] is not None:
        body["from"] = row["from"]
    if row["to"] is not None:
        body["to"] = row["to"]
    if row["asset_type"] == "native":
        body["asset"] = {"native": True}
    elif row["asset_type"] == "issued":
        body["asset"] = {"issuedAsset": {"assetCode": row["asset_code"], "issuer": row["asset_issuer"]}}
    amount = row["amount"]
    body["amount"] = str(amount) if amount is not None else row["amount_overflow"]
    return {"meta": meta, row["event_type"]: body}
