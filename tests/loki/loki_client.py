"""python-logging-loki (a Loki client for Python's logging) pushing to logwarden over TLS:
JSON push requests to /loki/api/v1/push, which it requires to be answered 204.

Environment: LW_URL (https://localhost:PORT/loki/api/v1/push), LW_RUN, LW_COUNT; the CA
comes in REQUESTS_CA_BUNDLE (the client uses requests' defaults).
"""

import logging
import os
import sys

import logging_loki

run, count = os.environ["LW_RUN"], int(os.environ.get("LW_COUNT", "40"))
failures = []


class Handler(logging_loki.LokiHandler):
    def handleError(self, record):
        failures.append(sys.exc_info()[1])


handler = Handler(url=os.environ["LW_URL"], tags={"app": "loki-app", "host": "loki-host"}, version="1")
log = logging.getLogger("loki_client")
log.propagate = False
log.setLevel(logging.DEBUG)
log.addHandler(handler)
for i in range(count):
    if i % 4 == 0:
        log.warning("loki line %d of run %s", i, run, extra={"tags": {"request": f"r{i}"}})
    else:
        log.info("loki line %d of run %s", i, run)
if failures:
    print("loki: pushes failed", failures[:3], file=sys.stderr)
    sys.exit(1)
print("loki: all pushes answered 204")
