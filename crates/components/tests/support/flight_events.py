"""Reads a ttp-arrow-processor flight with pyarrow.flight and prints each event as the
golden JSON shape (the protojson mapping of TokenTransferEvent), one a line.

    flight_events.py grpc://HOST:PORT START END
"""
import json
import os
import sys

import pyarrow.flight as flight

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from golden_shape import golden_shape  # noqa: E402


def main():
    location, start, end = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    client = flight.connect(location)
    ticket = json.dumps({"start_ledger": start, "end_ledger": end}).encode()
    table = client.do_get(flight.Ticket(ticket)).read_all()
    for row in table.to_pylist():
        print(json.dumps(golden_shape(row)))


if __name__ == "__main__":
    main()
