"""OpenTelemetry traces (#23): with --otlp-endpoint the server exports one span per request over
OTLP/HTTP (protobuf) with admission, queue, generation and settlement children, joined to the
caller's trace by its W3C `traceparent`. The collector is a stand-in written here; the protobuf is
decoded with the `opentelemetry-proto` package."""

import secrets
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import requests
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from conftest import _start, _stop

PRICE = {"input_per_million": 1_000_000, "output_per_million": 1_000_000, "cached_input_per_million": 1_000_000}


class Collector:
    """Accepts OTLP/HTTP protobuf exports at /v1/traces and keeps their spans."""

    def __init__(self):
        self.spans = []
        self.paths = []
        self.lock = threading.Lock()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("content-length", "0")))
                request = ExportTraceServiceRequest()
                request.ParseFromString(body)
                with outer.lock:
                    outer.paths.append((self.path, self.headers.get("content-type")))
                    for rs in request.resource_spans:
                        for ss in rs.scope_spans:
                            outer.spans.extend(ss.spans)
                self.send_response(200)
                self.send_header("content-type", "application/x-protobuf")
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, *args):
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()

    def trace(self, trace_id: bytes, names: set, timeout: float = 30.0) -> list:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self.lock:
                spans = [s for s in self.spans if s.trace_id == trace_id]
            if names <= {s.name for s in spans}:
                return spans
            time.sleep(0.2)
        raise AssertionError(f"spans of the trace after {timeout}s: {[s.name for s in spans]}, wanted {names}")


@pytest.fixture(scope="module")
def collector():
    c = Collector()
    yield c
    c.close()


@pytest.fixture(scope="module")
def traced_server(tmp_path_factory, paths, admin_key, collector):
    tmp = str(tmp_path_factory.mktemp("traces"))
    args = ["--model", f"{paths['tiny']}=tiny", "--slots", "4", "--slot-context", "512",
            "--otlp-endpoint", collector.url]
    s = _start("traces", args, tmp, admin_key, env={"OTEL_BSP_SCHEDULE_DELAY": "200"})
    s.admin("PUT", "/prices/tiny", PRICE, expect=200)
    s.with_tenant("traced")
    yield s
    _stop(s)


@pytest.mark.parametrize("stream", [False, True])
def test_a_request_is_one_span_with_its_phases_in_the_callers_trace(traced_server, collector, stream):
    trace_id = secrets.token_hex(16)
    parent_id = secrets.token_hex(8)
    r = requests.post(
        traced_server.url + "/v1/chat/completions",
        headers={**traced_server.auth(), "traceparent": f"00-{trace_id}-{parent_id}-01"},
        json={"model": "tiny", "messages": [{"role": "user", "content": "Hi."}], "max_tokens": 8, "stream": stream},
        timeout=60,
    )
    assert r.status_code == 200, r.text
    _ = r.content  # the whole stream
    assert r.headers["x-trace-id"] == trace_id
    assert len(r.headers["x-request-id"]) == 32

    phases = {"admission", "queue", "generation", "settlement"}
    spans = collector.trace(bytes.fromhex(trace_id), {"POST /v1/chat/completions"} | phases)
    (root,) = [s for s in spans if s.name == "POST /v1/chat/completions"]
    assert root.parent_span_id == bytes.fromhex(parent_id), "the request span is not the caller's child"
    assert root.kind == root.SPAN_KIND_SERVER
    children = {s.name: s for s in spans if s.parent_span_id == root.span_id}
    assert phases <= set(children), sorted(children)
    # In order: admitted, queued, generated, settled; all inside the request.
    a, q, g, st = (children[n] for n in ("admission", "queue", "generation", "settlement"))
    assert root.start_time_unix_nano <= a.start_time_unix_nano <= a.end_time_unix_nano <= q.start_time_unix_nano
    assert q.end_time_unix_nano <= g.start_time_unix_nano + 1_000_000
    assert g.end_time_unix_nano <= st.start_time_unix_nano + 1_000_000
    if not stream:
        # A streamed answer's request span may be exported as ended when its body is handed
        # over, before the stream's end settles; a whole answer is settled inside it.
        assert st.end_time_unix_nano <= root.end_time_unix_nano
    attrs = {kv.key: kv.value for kv in root.attributes}
    assert attrs["http.response.status_code"].int_value == 200
    assert attrs["request_id"].string_value == r.headers["x-request-id"]
    assert all(p == "/v1/traces" for p, _ in collector.paths), collector.paths


def test_without_traceparent_a_new_trace_is_started_and_named(traced_server, collector):
    r = requests.get(traced_server.url + "/v1/models", headers=traced_server.auth(), timeout=30)
    assert r.status_code == 200
    trace_id = r.headers["x-trace-id"]
    assert len(trace_id) == 32 and trace_id != "0" * 32
    spans = collector.trace(bytes.fromhex(trace_id), {"GET /v1/models"})
    assert spans[0].parent_span_id == b""
    # An error response carries its request and trace ids too.
    r = requests.get(traced_server.url + "/v1/models", headers={"Authorization": "Bearer nope"}, timeout=30)
    assert r.status_code == 401 and r.headers["x-request-id"] and r.headers["x-trace-id"]
