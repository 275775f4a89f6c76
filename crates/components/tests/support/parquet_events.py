"""Reads an arrow-analytics-sink Parquet dataset and prints each event in the golden JSON
shape, one a line, in ledger, transaction and event order.

    parquet_events.py duckdb|pyarrow OUTPUT_DIR

DuckDB reads it as analysts do (`read_parquet('DIR/**/*.parquet', hive_partitioning =
true)`, the `date` partition checked against each close time); pyarrow reads it as a Hive
dataset. Files are written in ledger order, so the file name and row order give the events'
order.
"""
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from golden_shape import golden_shape  # noqa: E402


def rows_duckdb(root):
    import duckdb

    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    rel = con.sql(
        f"""SELECT *, filename FROM read_parquet('{root}/**/*.parquet',
                hive_partitioning = true, filename = true, file_row_number = true)"""
    )
    names = rel.columns
    rows = [dict(zip(names, r)) for r in rel.fetchall()]
    for r in rows:
        day = r["closed_at"].strftime("%Y-%m-%d")
        if str(r["date"]) != day:
            raise SystemExit(f"row of ledger {r['ledger_sequence']} closed {day} is in date={r['date']}")
    return rows


def rows_pyarrow(root):
    import pyarrow.dataset as ds

    dataset = ds.dataset(root, format="parquet", partitioning="hive")
    rows = []
    for fragment in dataset.get_fragments():
        for i, r in enumerate(fragment.to_table().to_pylist()):
            r["filename"] = fragment.path
            r["file_row_number"] = i
            rows.append(r)
    return rows


def main():
    reader, root = sys.argv[1], sys.argv[2]
    rows = rows_duckdb(root) if reader == "duckdb" else rows_pyarrow(root)
    # A file holds whole ledgers in order; files sort by their first ledger.
    rows.sort(key=lambda r: (r["ledger_sequence"], os.path.basename(r["filename"]), r["file_row_number"]))
    for r in rows:
        print(json.dumps(golden_shape(r)))


if __name__ == "__main__":
    main()
