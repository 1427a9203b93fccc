"""splunk-hec-handler (a Python logging handler for the Splunk HTTP Event Collector) sending to
logwarden over TLS: one JSON event per log record to /services/collector/event, with a token.
Exits non-zero unless every record was accepted.

Environment: LW_PORT, LW_TOKEN, LW_RUN, LW_COUNT; the CA comes in REQUESTS_CA_BUNDLE.
"""

import logging
import os
import sys

from splunk_hec_handler import SplunkHecHandler

run, count = os.environ["LW_RUN"], int(os.environ.get("LW_COUNT", "30"))
failures = []


class Handler(SplunkHecHandler):
    def handleError(self, record):
        failures.append(sys.exc_info()[1])


handler = Handler(
    "localhost",
    os.environ["LW_TOKEN"],
    port=int(os.environ["LW_PORT"]),
    proto="https",
    source="hec_client.py",
    sourcetype="python:logging",
    index="main",
    hostname="hec-host",
)
log = logging.getLogger("hec_client")
log.propagate = False
log.setLevel(logging.DEBUG)
log.addHandler(handler)
for i in range(count):
    level = logging.ERROR if i % 5 == 0 else logging.INFO
    log.log(level, {"message": f"hec event {i} of run {run}", "fields": {"run": run, "i": str(i)}})
if failures:
    print("hec: events failed", failures[:3], file=sys.stderr)
    sys.exit(1)
print("hec: all events accepted")
