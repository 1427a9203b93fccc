"""Time log-shaped SQL through logwarden's Flight SQL endpoint (ADBC) and, side by side, DuckDB
over the same Parquet segments. Run by benches/query-bench.sh, which loads the data.

Each query runs once to warm caches, then --runs times; the median wall time is reported,
including fetching the whole result as Arrow.
"""

import argparse
import glob
import json
import statistics
import time
import warnings

import adbc_driver_flightsql.dbapi as flight_sql
from adbc_driver_flightsql import DatabaseOptions

warnings.simplefilter("ignore")

QUERIES = [
    ("count", "SELECT count(*) FROM logs", 0.050),
    ("count severity<=3", "SELECT count(*) FROM logs WHERE severity <= 3", 0.200),
    ("group by host", "SELECT host, count(*) FROM logs GROUP BY host", 0.500),
    ("group by app, severity", "SELECT app, severity, count(*) FROM logs GROUP BY app, severity", 0.500),
    ("substring search", "SELECT count(*) FROM logs WHERE message LIKE '%SHA256:0000%'", 5.0),
    (
        "latest 100 matching",
        "SELECT * FROM logs WHERE message LIKE '%items=4999 %' ORDER BY timestamp DESC LIMIT 100",
        1.0,
    ),
]


SMALL = ("small (no rows match)", "SELECT count(*) FROM logs WHERE host = 'no-such-host'", 1.0)


def median_time(run, runs, cold=False):
    if cold:
        t = time.perf_counter()
        rows = run()
        return time.perf_counter() - t, rows
    run()
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        rows = run()
        times.append(time.perf_counter() - t)
    return statistics.median(times), rows


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--uri", required=True)
    p.add_argument("--ca", required=True)
    p.add_argument("--token", required=True)
    p.add_argument("--segments", required=True, help="directory of the Parquet segments")
    p.add_argument("--runs", type=int, default=5)
    p.add_argument("--no-duckdb", action="store_true")
    p.add_argument("--cold", action="store_true", help="time each query's first run only (cold caches)")
    p.add_argument("--small", action="store_true", help="add a query that matches nothing (overhead)")
    p.add_argument("--save", help="write the times (ms) to this JSON file")
    p.add_argument("--against", help="a --save file: add a column with the ratio to its times")
    a = p.parse_args()

    conn = flight_sql.connect(
        a.uri,
        db_kwargs={
            DatabaseOptions.TLS_ROOT_CERTS.value: open(a.ca).read(),
            DatabaseOptions.AUTHORIZATION_HEADER.value: f"Bearer {a.token}",
        },
    )
    cur = conn.cursor()

    def lw(sql):
        def run():
            cur.execute(sql)
            return cur.fetch_arrow_table().num_rows
        return run

    duck = None
    if not a.no_duckdb:
        import duckdb

        duck = duckdb.connect()
        files = sorted(glob.glob(f"{a.segments}/*.parquet"))
        duck.execute(f"CREATE VIEW logs AS SELECT * FROM read_parquet({files!r})")

    def dk(sql):
        def run():
            return duck.execute(sql).to_arrow_table().num_rows
        return run

    queries = QUERIES + [SMALL] if a.small else QUERIES
    if a.cold:
        print("cold: each query's first run")
    else:
        cur.execute("SELECT count(*) FROM logs")
        total = cur.fetchone()[0]
        print(f"events: {total:,}  runs per query: {a.runs} (median, result fetched as Arrow)")
    ref = json.load(open(a.against)) if a.against else {}
    third = "duckdb" if duck else ("ratio" if ref else "")
    print(f"{'query':26s} {'logwarden':>11s} {'goal':>8s} {third:>10s} {'rows':>6s}")
    saved = {}
    for name, sql, goal in queries:
        t_lw, rows = median_time(lw(sql), a.runs, a.cold)
        saved[name] = t_lw * 1000
        flag = "" if t_lw <= goal else "  over goal"
        if duck:
            t_dk = median_time(dk(sql), a.runs)[0]
            col = f"{t_dk * 1000:8.1f}ms"
            flag += "" if t_lw <= t_dk else "  slower than duckdb"
        elif name in ref:
            col = f"{t_lw * 1000 / ref[name]:9.2f}x"
        else:
            col = f"{'':>10s}"
        print(f"{name:26s} {t_lw * 1000:9.1f}ms {goal * 1000:6.0f}ms {col} {rows:6d}{flag}")
    if a.save:
        json.dump(saved, open(a.save, "w"))


if __name__ == "__main__":
    main()
