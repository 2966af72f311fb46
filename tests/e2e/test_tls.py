"""HTTPS end to end: the `openai` client over TLS with a test CA, HTTP/2 by ALPN, a certificate
swapped on disk and reloaded on SIGHUP (new connections get it while an old stream runs on), a
failed reload that keeps the certificate in use, and a key that does not fit refused at start."""

import os
import signal
import socket
import ssl
import subprocess
import threading
import time

import openai
import pytest
import requests
import trustme

from conftest import _env_path, _free_port, _start, _stop

STREAM_TOKENS = 800


def _write_pair(cert, directory):
    """Writes CERT's chain and key atomically (a reader never sees half a file); returns the paths."""
    paths = {}
    for name, blob in (("cert.pem", b"".join(p.bytes() for p in cert.cert_chain_pems)),
                       ("key.pem", cert.private_key_pem.bytes())):
        path = os.path.join(directory, name)
        with open(path + ".new", "wb") as f:
            f.write(blob)
        os.replace(path + ".new", path)
        paths[name] = path
    return paths["cert.pem"], paths["key.pem"]


def _der(cert):
    return ssl.PEM_cert_to_DER_cert(cert.cert_chain_pems[0].bytes().decode())


def _served_cert(server) -> bytes:
    """The certificate a new connection gets (verified against the test CA)."""
    host, port = server.url.removeprefix("https://").rsplit(":", 1)
    ctx = ssl.create_default_context(cafile=server.verify)
    with socket.create_connection((host, int(port)), timeout=10) as raw:
        with ctx.wrap_socket(raw, server_hostname=host) as tls:
            return tls.getpeercert(binary_form=True)


@pytest.fixture(scope="module")
def tls(tmp_path_factory, paths, admin_key):
    tmp = str(tmp_path_factory.mktemp("tls"))
    ca = trustme.CA()
    ca_path = os.path.join(tmp, "ca.pem")
    ca.cert_pem.write_to_path(ca_path)
    first = ca.issue_cert("127.0.0.1", "localhost")
    cert_path, key_path = _write_pair(first, tmp)
    args = ["--model", f"{paths['smol']}=smol", "--slots", "2", "--slot-context", "1024", "--threads", "1",
            "--tls-cert", cert_path, "--tls-key", key_path]
    server = _start("tls", args, tmp, admin_key, ca=ca_path).with_tenant()
    yield {"server": server, "ca": ca, "dir": tmp, "first": first}
    _stop(server)


def test_openai_client_over_https_and_http2(tls):
    server = tls["server"]
    assert _served_cert(server) == _der(tls["first"])
    out = server.client().chat.completions.create(
        model="smol", messages=[{"role": "user", "content": "Say hi"}], max_tokens=8)
    assert out.choices[0].finish_reason in ("stop", "length") and out.usage.completion_tokens > 0

    # HTTP/2 by ALPN, with a streamed answer over it.
    ctx = ssl.create_default_context(cafile=server.verify)
    with openai.DefaultHttpxClient(http2=True, verify=ctx, timeout=60) as h2:
        r = h2.get(server.url + "/v1/models", headers=server.auth())
        assert r.status_code == 200 and r.http_version == "HTTP/2", (r.status_code, r.http_version)
        stream = server.client(http_client=h2).chat.completions.create(
            model="smol", messages=[{"role": "user", "content": "Count to five"}], max_tokens=16, stream=True,
            stream_options={"include_usage": True})
        chunks = list(stream)
    assert chunks and chunks[-1].usage and chunks[-1].usage.completion_tokens > 0

    # A client that does not trust the test CA, and plain HTTP on the TLS port, get nothing.
    with pytest.raises(requests.exceptions.SSLError):
        requests.get(server.url + "/health", timeout=10)
    plain = server.url.replace("https://", "http://")
    try:
        r = requests.get(plain + "/health", timeout=10)
        assert r.status_code != 200, "plain HTTP was served on the TLS port"
    except requests.RequestException:
        pass


def test_sighup_swaps_the_certificate_while_a_stream_runs(tls):
    server = tls["server"]
    record = {"times": [], "usage": None, "error": None}
    started = threading.Event()

    def stream():
        try:
            chunks = server.client().completions.create(
                model="smol", prompt="Once upon a time", max_tokens=STREAM_TOKENS, stream=True,
                stream_options={"include_usage": True}, extra_body={"ignore_eos": True})
            for chunk in chunks:
                record["times"].append(time.monotonic())
                started.set()
                if chunk.usage:
                    record["usage"] = chunk.usage
        except Exception as e:  # reported below, with what was received
            record["error"] = repr(e)
        started.set()

    worker = threading.Thread(target=stream)
    worker.start()
    assert started.wait(120), "the stream did not start"
    second = tls["ca"].issue_cert("127.0.0.1", "localhost")
    _write_pair(second, tls["dir"])
    server.proc.send_signal(signal.SIGHUP)  # by PID: the server this test started
    deadline = time.monotonic() + 15
    while _served_cert(server) != _der(second):
        assert time.monotonic() < deadline, "new connections still get the old certificate after SIGHUP"
        time.sleep(0.1)
    swapped = time.monotonic()
    worker.join(180)
    assert not worker.is_alive(), "the stream did not end"
    assert record["error"] is None, record["error"]
    assert record["usage"] and record["usage"].completion_tokens == STREAM_TOKENS, record["usage"]
    after = sum(1 for t in record["times"] if t > swapped)
    assert after > 0, "the stream ended before the swap: it proves nothing about an old stream running on"
    assert "TLS certificate reloaded" in open(server.log_path).read()

    # A reload that fails keeps the certificate in use, and says why.
    with open(os.path.join(tls["dir"], "cert.pem"), "w") as f:
        f.write("not a certificate\n")
    server.proc.send_signal(signal.SIGHUP)
    deadline = time.monotonic() + 15
    while "TLS certificate not reloaded" not in open(server.log_path).read():
        assert time.monotonic() < deadline, "no log line for the failed reload:\n" + server.log_tail()
        time.sleep(0.1)
    assert _served_cert(server) == _der(second)
    assert server.client().models.list().data


def test_a_key_that_does_not_fit_the_certificate_stops_the_server(tmp_path):
    ca = trustme.CA()
    one, other = ca.issue_cert("127.0.0.1"), ca.issue_cert("127.0.0.1")
    cert = tmp_path / "cert.pem"
    key = tmp_path / "key.pem"
    one.cert_chain_pems[0].write_to_path(str(cert))
    other.private_key_pem.write_to_path(str(key))
    env = {k: v for k, v in os.environ.items() if not k.startswith("FLYWHEEL_")}
    p = subprocess.run([_env_path("FLYWHEEL_BIN"), "serve", "--listen", f"127.0.0.1:{_free_port()}",
                        "--data-dir", str(tmp_path / "data"), "--tls-cert", str(cert), "--tls-key", str(key)],
                       env=env, capture_output=True, text=True, timeout=60)
    assert p.returncode != 0
    assert "does not fit" in p.stderr and str(key) in p.stderr, p.stderr[-2000:]
