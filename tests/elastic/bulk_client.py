"""The official Elasticsearch Python client against logwarden over TLS: it checks the cluster
(GET /, the X-Elastic-Product header), then sends documents with the bulk helper (POST /_bulk)
and with an index in the path, and reads the per-item results.

Environment: LW_URL (https://localhost:PORT), LW_CA_FILE, LW_RUN (a marker put in every
message), LW_COUNT. Optional LW_API_KEY ("id:key") or LW_USER / LW_PASSWORD.
"""

import os
import sys

from elasticsearch import Elasticsearch, helpers

url, ca, run = os.environ["LW_URL"], os.environ["LW_CA_FILE"], os.environ["LW_RUN"]
count = int(os.environ.get("LW_COUNT", "100"))
auth = {}
if os.environ.get("LW_API_KEY"):
    auth["api_key"] = tuple(os.environ["LW_API_KEY"].split(":", 1))
elif os.environ.get("LW_USER"):
    auth["basic_auth"] = (os.environ["LW_USER"], os.environ["LW_PASSWORD"])

es = Elasticsearch(url, ca_certs=ca, request_timeout=30, **auth)

info = es.info()
assert info["version"]["number"].startswith("8."), info
print("cluster", info["cluster_name"], info["version"]["number"])

actions = (
    {
        "_index": "filebeat-test",
        "_op_type": "create" if i % 2 else "index",
        "_source": {
            "@timestamp": f"2026-12-03T10:00:{i % 60:02d}Z",
            "message": f"bulk doc {i} of run {run}",
            "log": {"level": "error" if i % 10 == 0 else "info"},
            "host": {"name": "es-host"},
            "service": {"name": "billing"},
            "labels": {"i": i},
        },
    }
    for i in range(count)
)
ok, errors = helpers.bulk(es, actions, chunk_size=30, raise_on_error=False, stats_only=False)
print(f"bulk ok={ok} errors={len(errors)}")
if ok != count or errors:
    print("bulk: items failed", errors[:3], file=sys.stderr)
    sys.exit(1)

# A delete is refused per item; the document sent with it is still stored.
resp = es.bulk(
    index="path-index",
    operations=[
        {"index": {"_id": f"{run}-x"}},
        {"message": f"path index doc of run {run}"},
        {"delete": {"_id": "gone"}},
    ],
)
statuses = [list(item.values())[0]["status"] for item in resp["items"]]
print("mixed", resp["errors"], statuses)
if statuses != [201, 400] or not resp["errors"]:
    sys.exit(1)
print("elastic: all checks passed")
