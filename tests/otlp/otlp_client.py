"""The OpenTelemetry Python SDK's OTLP log exporters (gRPC and HTTP/protobuf) sending to
logwarden over TLS, as an instrumented application does: Python logging through the SDK's
LoggingHandler, inside a span, with gzip. Exits non-zero unless every export succeeded.

Environment: LW_PROTOCOL (grpc | http), LW_ENDPOINT, LW_CA_FILE, LW_COUNT, LW_RUN (a marker
put in every message so the test can find them), optional LW_CERT / LW_KEY (client certificate).
"""

import logging
import os
import sys

from opentelemetry import trace
from opentelemetry.sdk._logs import LoggerProvider, LoggingHandler
from opentelemetry.sdk._logs.export import BatchLogRecordProcessor
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider

protocol = os.environ["LW_PROTOCOL"]
endpoint = os.environ["LW_ENDPOINT"]
ca = os.environ["LW_CA_FILE"]
count = int(os.environ.get("LW_COUNT", "50"))
run = os.environ["LW_RUN"]
cert, key = os.environ.get("LW_CERT"), os.environ.get("LW_KEY")

if protocol == "grpc":
    import grpc
    from opentelemetry.exporter.otlp.proto.grpc._log_exporter import OTLPLogExporter

    def read(path):
        with open(path, "rb") as f:
            return f.read()

    creds = grpc.ssl_channel_credentials(
        root_certificates=read(ca),
        private_key=read(key) if key else None,
        certificate_chain=read(cert) if cert else None,
    )
    exporter = OTLPLogExporter(endpoint=endpoint, credentials=creds, compression=grpc.Compression.Gzip, timeout=20)
else:
    from opentelemetry.exporter.otlp.proto.http import Compression
    from opentelemetry.exporter.otlp.proto.http._log_exporter import OTLPLogExporter

    exporter = OTLPLogExporter(
        endpoint=endpoint,
        certificate_file=ca,
        client_certificate_file=cert,
        client_key_file=key,
        compression=Compression.Gzip,
        timeout=20,
    )

results = []
real_export = exporter.export


def export(batch):
    result = real_export(batch)
    results.append((len(batch), result))
    return result


exporter.export = export

resource = Resource.create({"service.name": "checkout", "host.name": "otel-host", "deployment.environment": "test"})
provider = LoggerProvider(resource=resource)
provider.add_log_record_processor(BatchLogRecordProcessor(exporter, max_export_batch_size=20, schedule_delay_millis=50))
trace.set_tracer_provider(TracerProvider(resource=resource))
tracer = trace.get_tracer("otlp_client")

log = logging.getLogger("otlp_client")
log.propagate = False
log.setLevel(logging.DEBUG)
log.addHandler(LoggingHandler(level=logging.DEBUG, logger_provider=provider))

with tracer.start_as_current_span("checkout-request") as span:
    ctx = span.get_span_context()
    print(f"trace_id={ctx.trace_id:032x} span_id={ctx.span_id:016x}")
    for i in range(count):
        level = logging.ERROR if i % 10 == 0 else logging.INFO
        log.log(level, "order %d of run %s placed", i, run, extra={"order.id": i, "run": run})

provider.force_flush(30_000)
provider.shutdown()

sent = sum(n for n, _ in results)
failed = [r for _, r in results if r.name != "SUCCESS"]
print(f"exports={len(results)} records={sent} failed={len(failed)}")
if failed or sent != count:
    print("otlp: export failed", failed, file=sys.stderr)
    sys.exit(1)
print("otlp: all exports succeeded")
