"""Drive logwarden's Flight SQL endpoint with the ADBC Flight SQL driver, as analysts do.

Run by tests/it/adbc.rs with LW_FLIGHT_URI, LW_CA_FILE and LW_TOKEN set. Exits non-zero on
the first failed check, printing what differed.
"""

import os
import sys
import warnings

import adbc_driver_flightsql.dbapi as flight_sql
import pyarrow as pa
from adbc_driver_flightsql import DatabaseOptions

warnings.simplefilter("ignore")  # "Cannot disable autocommit": logwarden has no transactions.

URI = os.environ["LW_FLIGHT_URI"]
CA = open(os.environ["LW_CA_FILE"]).read()
TOKEN = os.environ["LW_TOKEN"]


def connect(token):
    return flight_sql.connect(
        URI,
        db_kwargs={
            DatabaseOptions.TLS_ROOT_CERTS.value: CA,
            DatabaseOptions.AUTHORIZATION_HEADER.value: f"Bearer {token}",
        },
    )


def check(cond, what):
    if not cond:
        print(f"FAILED: {what}", file=sys.stderr)
        sys.exit(1)


conn = connect(TOKEN)
cur = conn.cursor()

# A plain query, read as Arrow.
cur.execute("SELECT app, count(*) AS n FROM logs GROUP BY app ORDER BY app")
table = cur.fetch_arrow_table()
check(isinstance(table, pa.Table), "result is an Arrow table")
rows = table.to_pylist()
check(rows == [{"app": "api", "n": 2}, {"app": "kernel", "n": 1}, {"app": "nginx", "n": 1}], f"group by: {rows}")

# A prepared statement with a bound parameter.
cur.execute("SELECT message FROM logs WHERE app = ? ORDER BY message", parameters=("api",))
got = [r[0] for r in cur.fetchall()]
check(got == ["login failed", "login ok"], f"bound parameter: {got}")
cur.execute("SELECT count(*) FROM logs WHERE severity <= ?", parameters=(3,))
got = cur.fetchone()[0]
check(got == 2, f"bound integer parameter: {got}")

# The event sent over TLS a moment before the script started.
cur.execute("SELECT host, message FROM logs WHERE app = 'nginx'")
got = cur.fetchall()
check(got == [("web-1", "just arrived")], f"fresh event: {got}")

# The catalog tree and a table's schema, as GUI clients browse them.
objects = conn.adbc_get_objects(depth="all").read_all().to_pylist()
catalogs = {c["catalog_name"]: c for c in objects}
check("logwarden" in catalogs, f"catalogs: {list(catalogs)}")
schemas = {s["db_schema_name"]: s for s in catalogs["logwarden"]["catalog_db_schemas"]}
check("public" in schemas, f"schemas: {list(schemas)}")
tables = {t["table_name"]: t for t in schemas["public"]["db_schema_tables"]}
check("logs" in tables and tables["logs"]["table_type"] == "TABLE", f"tables: {list(tables)}")
columns = [c["column_name"] for c in tables["logs"]["table_columns"]]
check(columns[:2] == ["timestamp", "received_at"] and "message" in columns, f"columns: {columns}")
schema = conn.adbc_get_table_schema("logs")
check(schema.field("message").type == pa.string(), f"message type: {schema.field('message').type}")
check(pa.types.is_timestamp(schema.field("timestamp").type), f"timestamp type: {schema.field('timestamp').type}")

# Read-only.
try:
    cur.execute("DROP TABLE logs")
    check(False, "DROP TABLE was accepted")
except flight_sql.Error as e:
    check("read-only" in str(e), f"DROP TABLE error: {e}")

cur.close()
conn.close()

# No token, no query.
try:
    bad = connect("wrong-token")
    c = bad.cursor()
    c.execute("SELECT 1")
    c.fetchall()
    check(False, "a wrong token was accepted")
except flight_sql.Error as e:
    check("nauthenticated" in str(e) or "UNAUTHENTICATED" in str(e), f"wrong token error: {e}")

print("adbc: all checks passed")
