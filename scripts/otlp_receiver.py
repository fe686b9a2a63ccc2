"""A real OTLP/HTTP receiver for tal's export tests and benchmark.

Decodes every request with the official OTLP protobuf definitions (the
`opentelemetry-proto` package from PyPI) and appends one JSON line per
request to OUT: {"path": ..., "content_type": ..., "body": <the request as
protobuf's canonical JSON>}. Answers with the matching Export*ServiceResponse.

Usage:
  python otlp_receiver.py serve OUT [--fail-first N] [--partial K] [--port-file FILE] [--count-only]
                                   [--tls CERT.pem KEY.pem] [--retry-after SECS]
                                   [--answer STATUS BODYFILE] [--error-message TEXT]
      Listens on 127.0.0.1 (port 0: the OS picks; written to --port-file);
      with --tls, over HTTPS with that certificate and key.
      The first N requests are answered 503 (to test retries). With
      --partial K, every answer says K spans or points were rejected (OTLP
      partial success), with --error-message as its message. --retry-after
      puts that Retry-After on the 503s. --answer answers every request
      (after decoding it) with STATUS and the bytes of BODYFILE as they are
      (a hostile or unreadable answer). Answers are JSON to JSON requests. With
      --count-only (for benchmarks), each request is still fully decoded but
      only its span and data-point counts are written.
  python otlp_receiver.py check-json TRACES.json METRICS.json
      Parses OTLP JSON files (the /v1/traces and /v1/metrics request shapes)
      with the same definitions and prints them as canonical JSON lines.
"""

import base64
import json
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from google.protobuf import json_format
from opentelemetry.proto.collector.metrics.v1 import metrics_service_pb2 as ms
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2 as ts

KINDS = {
    "/v1/traces": (ts.ExportTraceServiceRequest, ts.ExportTraceServiceResponse),
    "/v1/metrics": (ms.ExportMetricsServiceRequest, ms.ExportMetricsServiceResponse),
}


ID_KEYS = ("traceId", "spanId", "parentSpanId")


def _ids(obj, conv):
    """Applies conv to every trace/span id in a decoded message."""
    if isinstance(obj, dict):
        return {k: (conv(v) if k in ID_KEYS and isinstance(v, str) else _ids(v, conv)) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_ids(v, conv) for v in obj]
    return obj


def to_json(msg):
    """protobuf's canonical JSON, with ids as hex as OTLP JSON writes them."""
    d = json_format.MessageToDict(msg, preserving_proto_field_name=False)
    return _ids(d, lambda b64: base64.b64decode(b64).hex())


def parse_otlp_json(text, msg):
    """OTLP JSON differs from protobuf's canonical JSON in its ids (hex, not
    base64): convert those, then parse with the official definitions."""
    d = _ids(json.loads(text), lambda h: base64.b64encode(bytes.fromhex(h)).decode())
    json_format.ParseDict(d, msg)


def counts(msg):
    spans = points = 0
    for rs in getattr(msg, "resource_spans", []):
        for ss in rs.scope_spans:
            spans += len(ss.spans)
    for rm in getattr(msg, "resource_metrics", []):
        for sm in rm.scope_metrics:
            for m in sm.metrics:
                kind = m.WhichOneof("data")
                points += len(getattr(m, kind).data_points) if kind else 0
    return {"spans": spans, "points": points}


def serve(out: str, fail_first: int, port_file: str | None, count_only: bool = False,
          tls: tuple[str, str] | None = None, partial: int = 0, retry_after: int = 0,
          answer: tuple[int, bytes] | None = None, error_message: str = "refused by the test") -> None:
    lock = threading.Lock()
    state = {"seen": 0}

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args):
            pass

        def do_POST(self):
            n = int(self.headers.get("Content-Length", "0"))
            body = self.rfile.read(n)
            with lock:
                state["seen"] += 1
                fail = state["seen"] <= fail_first
            kind = KINDS.get(self.path)
            if kind is None:
                self.send_response(404)
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            if fail:
                self.send_response(503)
                self.send_header("Content-Length", "0")
                self.send_header("Retry-After", str(retry_after))
                self.end_headers()
                return
            req_type, resp_type = kind
            req = req_type()
            ctype = self.headers.get("Content-Type", "")
            if ctype.startswith("application/json"):
                parse_otlp_json(body, req)
            else:
                req.ParseFromString(body)
            if count_only:
                record = {"path": self.path, **counts(req)}
            else:
                record = {
                    "path": self.path,
                    "content_type": ctype,
                    "headers": {k.lower(): v for k, v in self.headers.items()},
                    "body": to_json(req),
                }
            with lock, open(out, "a") as f:
                f.write(json.dumps(record) + "\n")
            if answer is not None:
                self.send_response(answer[0])
                self.send_header("Content-Type", ctype or "application/octet-stream")
                self.send_header("Content-Length", str(len(answer[1])))
                self.end_headers()
                self.wfile.write(answer[1])
                return
            resp = resp_type()
            if partial:
                # OTLP partial success: the receiver refused `partial` items.
                if self.path == "/v1/traces":
                    resp.partial_success.rejected_spans = partial
                else:
                    resp.partial_success.rejected_data_points = partial
                resp.partial_success.error_message = error_message
            # Answered in the request's encoding, as the Collector does.
            if ctype.startswith("application/json"):
                reply = json_format.MessageToJson(resp).encode()
                rtype = "application/json"
            else:
                reply = resp.SerializeToString()
                rtype = "application/x-protobuf"
            self.send_response(200)
            self.send_header("Content-Type", rtype)
            self.send_header("Content-Length", str(len(reply)))
            self.end_headers()
            self.wfile.write(reply)

    srv = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    if tls:
        import ssl
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(tls[0], tls[1])
        srv.socket = ctx.wrap_socket(srv.socket, server_side=True)
    if port_file:
        with open(port_file + ".tmp", "w") as f:
            f.write(str(srv.server_address[1]))
        import os
        os.replace(port_file + ".tmp", port_file)
    else:
        print(srv.server_address[1], flush=True)
    srv.serve_forever()


def check_json(traces: str, metrics: str) -> None:
    for path, typ in ((traces, ts.ExportTraceServiceRequest), (metrics, ms.ExportMetricsServiceRequest)):
        msg = typ()
        with open(path) as f:
            parse_otlp_json(f.read(), msg)
        print(json.dumps(to_json(msg)))


def main() -> None:
    cmd = sys.argv[1]
    if cmd == "serve":
        args = sys.argv[2:]
        out = args[0]
        fail_first = 0
        port_file = None
        count_only = False
        tls = None
        partial = 0
        extra = {}
        i = 1
        while i < len(args):
            if args[i] == "--count-only":
                count_only = True
                i += 1
            elif args[i] == "--partial":
                partial = int(args[i + 1])
                i += 2
            elif args[i] == "--retry-after":
                extra["retry_after"] = int(args[i + 1])
                i += 2
            elif args[i] == "--answer":
                with open(args[i + 2], "rb") as f:
                    extra["answer"] = (int(args[i + 1]), f.read())
                i += 3
            elif args[i] == "--error-message":
                extra["error_message"] = args[i + 1]
                i += 2
            elif args[i] == "--fail-first":
                fail_first = int(args[i + 1])
                i += 2
            elif args[i] == "--tls":
                tls = (args[i + 1], args[i + 2])
                i += 3
            elif args[i] == "--port-file":
                port_file = args[i + 1]
                i += 2
            else:
                raise SystemExit(f"unknown argument {args[i]}")
        serve(out, fail_first, port_file, count_only, tls, partial, **extra)
    elif cmd == "check-json":
        check_json(sys.argv[2], sys.argv[3])
    else:
        raise SystemExit(__doc__)


if __name__ == "__main__":
    main()
