"""Flight SQL with a client certificate and no token, through the ADBC driver's mTLS options.

Run by tests/it/adbc.rs with LW_FLIGHT_URI, LW_CA_FILE, LW_CERT and LW_KEY set. Prints the
count it read; exits non-zero if the query fails.
"""

import os

import adbc_driver_flightsql.dbapi as flight_sql
from adbc_driver_flightsql import DatabaseOptions

conn = flight_sql.connect(
    os.environ["LW_FLIGHT_URI"],
    db_kwargs={
        DatabaseOptions.TLS_ROOT_CERTS.value: open(os.environ["LW_CA_FILE"]).read(),
        DatabaseOptions.MTLS_CERT_CHAIN.value: open(os.environ["LW_CERT"]).read(),
        DatabaseOptions.MTLS_PRIVATE_KEY.value: open(os.environ["LW_KEY"]).read(),
    },
)
cur = conn.cursor()
cur.execute("SELECT count(*) AS n FROM logs")
print(f"adbc mtls: count = {cur.fetchone()[0]}")
cur.close()
conn.close()
