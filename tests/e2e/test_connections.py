"""Connection limits: a flood of idle connections from one address neither exhausts the server
nor keeps anyone else from being served; over the per-address cap, connections are answered
with an API error and closed; idle connections and slow request heads are closed after their
timeouts; a request in flight is never cut by them."""

import json
import resource
import selectors
import socket
import threading
import time

import pytest
import requests

from conftest import _start, _stop

FLOOD = 5000
FLOOD_ADDRESS = "127.0.0.2"  # the flood's source; /health is probed from 127.0.0.1
PER_ADDRESS = 1000
IDLE_S = 3
HEADER_S = 1


def _raise_open_files(need: int) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft >= need:
        return
    if hard != resource.RLIM_INFINITY and hard < need:
        pytest.skip(f"the open-file limit's hard cap {hard} is below the {need} this test needs")
    resource.setrlimit(resource.RLIMIT_NOFILE, (need, hard))


def _host_port(server):
    host, port = server.url.removeprefix("http://").rsplit(":", 1)
    return host, int(port)


def _read_until_closed(socks, deadline):
    """Reads every socket until the server closes it; returns {sock: (bytes, closed_at)}."""
    sel = selectors.DefaultSelector()
    got = {}
    for s in socks:
        s.setblocking(False)
        sel.register(s, selectors.EVENT_READ)
        got[s] = [b"", None]
    open_left = len(socks)
    while open_left and time.monotonic() < deadline:
        for key, _ in sel.select(timeout=max(0.0, min(0.5, deadline - time.monotonic()))):
            s = key.fileobj
            try:
                data = s.recv(65536)
            except (ConnectionResetError, BlockingIOError) as e:
                if isinstance(e, BlockingIOError):
                    continue
                data = b""
            if data:
                got[s][0] += data
            else:
                got[s][1] = time.monotonic()
                sel.unregister(s)
                open_left -= 1
    sel.close()
    return got


@pytest.fixture(scope="module")
def guarded(tmp_path_factory, admin_key):
    """A server without models, with short connection timeouts."""
    tmp = str(tmp_path_factory.mktemp("connections"))
    args = ["--max-connections-per-address", str(PER_ADDRESS),
            "--idle-timeout-seconds", str(IDLE_S), "--header-read-timeout-seconds", str(HEADER_S)]
    s = _start("connections", args, tmp, admin_key)
    yield s
    _stop(s)


def test_idle_flood_from_one_address_is_capped_and_closed(guarded):
    _raise_open_files(FLOOD + 1024)
    host, port = _host_port(guarded)
    socks, opened = [], {}
    try:
        t0 = time.monotonic()
        for _ in range(FLOOD):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind((FLOOD_ADDRESS, 0))
            s.settimeout(10)
            s.connect((host, port))
            opened[s] = time.monotonic()
            socks.append(s)
        flooded_in = time.monotonic() - t0

        # Another address is served at once while the flood holds its connections.
        t1 = time.monotonic()
        r = requests.get(guarded.url + "/health", timeout=5)
        assert r.status_code == 200, r.text
        assert time.monotonic() - t1 < 2, "/health was slow during the flood"

        got = _read_until_closed(socks, time.monotonic() + IDLE_S + 10)
        still_open = [s for s, (_, closed) in got.items() if closed is None]
        assert not still_open, f"{len(still_open)} flood connections were never closed"

        refused = accepted = 0
        for s, (data, closed) in got.items():
            if data:
                head, _, body = data.partition(b"\r\n\r\n")
                assert head.startswith(b"HTTP/1.1 429"), head
                assert b"retry-after:" in head.lower(), head
                err = json.loads(body)["error"]
                assert err["code"] == "too_many_connections", err
                assert str(PER_ADDRESS) in err["message"], err
                refused += 1
            else:
                # Accepted and left idle: closed after the idle timeout, not before.
                lived = closed - opened[s]
                assert IDLE_S - 0.5 <= lived <= IDLE_S + 5, f"an idle connection lived {lived:.2f}s"
                accepted += 1
        # Connections closed for idleness free their place, so a slow flood gets a few more in.
        assert accepted >= PER_ADDRESS, (accepted, refused, flooded_in)
        assert refused >= FLOOD - PER_ADDRESS * (1 + int(flooded_in // IDLE_S)), (accepted, refused)
        metrics = guarded.metrics()
        line = 'flywheel_http_connections_refused_total{reason="per_address"}'
        counted = [l for l in metrics.splitlines() if l.startswith(line)]
        assert counted and int(float(counted[0].split()[-1])) == refused, counted
    finally:
        for s in socks:
            s.close()
    # Everything was given back: the server still answers, from the flood's address too.
    r = requests.get(guarded.url + "/health", timeout=5)
    assert r.status_code == 200


def test_slow_request_head_is_closed_after_the_header_timeout(guarded):
    host, port = _host_port(guarded)
    with socket.create_connection((host, port), timeout=10) as s:
        s.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n")
        t0 = time.monotonic()
        closed_after = None
        for _ in range(int((IDLE_S + 2) / 0.2)):
            time.sleep(0.2)
            try:
                s.sendall(b"X-Slow: 1\r\n")
            except (BrokenPipeError, ConnectionResetError):
                closed_after = time.monotonic() - t0
                break
        assert closed_after is not None, "a trickled request head was never cut"
        # Well before the idle timeout: the head's own clock ran out.
        assert closed_after < IDLE_S, f"closed after {closed_after:.2f}s"


def test_a_request_in_flight_outlives_the_idle_timeout(guarded):
    """A request whose body arrives over longer than the idle timeout is served: only
    connections with nothing in flight are idle."""
    host, port = _host_port(guarded)
    body = json.dumps({"model": "none", "prompt": "x" * 64}).encode()
    head = (f"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            f"Authorization: Bearer {guarded.admin_key}\r\nContent-Length: {len(body)}\r\n\r\n").encode()
    with socket.create_connection((host, port), timeout=10) as s:
        s.sendall(head)
        t0 = time.monotonic()
        for i in range(len(body)):
            if time.monotonic() - t0 > IDLE_S + 1:
                s.sendall(body[i:])
                break
            s.sendall(body[i:i + 1])
            time.sleep(0.05)
        answer = b""
        while b"\r\n\r\n" not in answer:
            chunk = s.recv(65536)
            assert chunk, f"closed while the request was in flight, after {time.monotonic() - t0:.1f}s"
            answer += chunk
        # The model does not exist: an answer from the API, not a cut connection.
        assert answer.startswith(b"HTTP/1.1 404"), answer[:200]


def test_a_stream_longer_than_the_idle_timeout_is_not_cut(tmp_path_factory, paths, admin_key):
    tmp = str(tmp_path_factory.mktemp("connections-stream"))
    args = ["--model", f"{paths['smol']}=smol", "--slots", "1", "--slot-context", "512",
            "--threads", "1", "--idle-timeout-seconds", "1", "--header-read-timeout-seconds", "1"]
    server = _start("connections-stream", args, tmp, admin_key)
    try:
        body = {"model": "smol", "prompt": "Once upon a time", "max_tokens": 200, "stream": True,
                "ignore_eos": True, "stream_options": {"include_usage": True}}
        t0 = time.monotonic()
        usage, done = None, False
        with requests.post(server.url + "/v1/completions", json=body, headers=server.auth(),
                           stream=True, timeout=120) as r:
            assert r.status_code == 200, r.text
            for line in r.iter_lines():
                if line == b"data: [DONE]":
                    done = True
                elif line.startswith(b"data: "):
                    usage = json.loads(line[6:]).get("usage") or usage
        took = time.monotonic() - t0
        assert done and usage and usage["completion_tokens"] == 200, (done, usage)
        assert took > 1.5, f"the stream took only {took:.2f}s: it proves nothing about a 1s idle timeout"
    finally:
        _stop(server)


def test_a_trusted_proxy_names_the_client_and_is_held_to_the_total_only(tmp_path_factory, admin_key):
    """From --trusted-proxies, X-Forwarded-For names the client in the request log and the proxy's
    connections are not held to the per-address cap; from anyone else the header is ignored."""
    tmp = str(tmp_path_factory.mktemp("connections-proxy"))
    args = ["--max-connections-per-address", "2", "--trusted-proxies", "127.0.0.1"]
    server = _start("connections-proxy", args, tmp, admin_key, env={"RUST_LOG": "info,gateway::observe=debug"})
    host, port = _host_port(server)
    held = []
    try:
        def request(source, forwarded):
            s = socket.create_connection((host, port), timeout=10, source_address=(source, 0))
            held.append(s)
            s.sendall(f"GET /health HTTP/1.1\r\nHost: x\r\nX-Forwarded-For: {forwarded}\r\n\r\n".encode())
            return s.recv(4096)

        # The proxy: four open connections, over the cap of two per address.
        for i in range(4):
            answer = request("127.0.0.1", f"203.0.113.{i + 1}")
            assert answer.startswith(b"HTTP/1.1 200"), (i, answer[:200])
        # Anyone else: held to two, and its header is not believed.
        assert request(FLOOD_ADDRESS, "198.51.100.1").startswith(b"HTTP/1.1 200")
        assert request(FLOOD_ADDRESS, "198.51.100.2").startswith(b"HTTP/1.1 200")
        assert request(FLOOD_ADDRESS, "198.51.100.3").startswith(b"HTTP/1.1 429")
        deadline = time.monotonic() + 10
        while "client=203.0.113.4" not in open(server.log_path).read():
            assert time.monotonic() < deadline, "no request logged under the forwarded client:\n" + server.log_tail()
            time.sleep(0.1)
        log = open(server.log_path).read()
        assert all(f"client=203.0.113.{i}" in log for i in range(1, 5)), server.log_tail()
        assert f"client={FLOOD_ADDRESS}" in log and "198.51.100." not in log, server.log_tail()
    finally:
        for s in held:
            s.close()
        _stop(server)
