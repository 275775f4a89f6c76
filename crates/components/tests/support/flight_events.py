"""Reads a ttp-arrow-processor flight with pyarrow.flight and prints each event as the
golden JSON shape (the protojson mapping of TokenTransferEvent), one a line.

    flight_events.py grpc://HOST:PORT START END
"""
import base64
import json
import sys

import pyarrow.flight as flight


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


def main():
    location, start, end = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    client = flight.connect(location)
    ticket = json.dumps({"start_ledger": start, "end_ledger": end}).encode()
    table = client.do_get(flight.Ticket(ticket)).read_all()
    for row in table.to_pylist():
        print(json.dumps(golden_shape(row)))


if __name__ == "__main__":
    main()
