"""Fixtures for the end-to-end suite: real `flywheel serve` processes on real models.

Environment (scripts/e2e.sh sets all of them):
  FLYWHEEL_BIN             the server binary
  FLYWHEEL_SMOL_GGUF       SmolLM2-135M-Instruct GGUF       -> served as `smol`
  FLYWHEEL_QWEN_GGUF       Qwen2.5-Coder-0.5B-Instruct GGUF -> served as `qwen`
  FLYWHEEL_TINY_GGUF       tests/e2e/make_test_gguf.py output -> served as `tiny`
  FLYWHEEL_TINY_TOOLS_GGUF  its --template llama31-tools output -> served as `tiny-tools`
  FLYWHEEL_TINY_THINK_GGUF  its --template think output        -> served as `tiny-think`
  FLYWHEEL_QWEN_TOKENIZER  Hugging Face tokenizer.json of Qwen
  FLYWHEEL_E2E_THREADS     --threads for the server (default: all cores)
"""

import os
import secrets
import signal
import socket
import ssl
import subprocess
import time

import openai
import pytest
import requests

SLOTS = 16
SLOT_CONTEXT = 4096
HEALTH_TIMEOUT_S = 300
CLIENT_TIMEOUT_S = 120

_SERVERS = []  # every server started, for log tails on failures


def _env_path(name: str) -> str:
    value = os.environ.get(name)
    if not value:
        pytest.exit(f"{name} is not set (run the suite through scripts/e2e.sh)", returncode=2)
    if not os.path.exists(value):
        pytest.exit(f"{name}={value} does not exist", returncode=2)
    return value


class Server:
    def __init__(self, name: str, url: str, proc: subprocess.Popen, log_path: str, admin_key: str, ca: str = None):
        self.name = name
        # What `requests` checks the server's certificate with: a CA file for an HTTPS server.
        self.verify = ca or True
        self.url = url
        self.proc = proc
        self.log_path = log_path
        self.admin_key = admin_key
        # The key tests call the API with: a tenant's key once `with_tenant` made one.
        self.key = admin_key
        self.tenant_id = None

    def auth(self, key: str = None) -> dict:
        return {"Authorization": f"Bearer {key or self.key}"}

    def admin(self, method: str, path: str, json=None, expect: int = None):
        """Calls /admin/v1/PATH with the admin key; returns the decoded body."""
        r = requests.request(method, self.url + "/admin/v1" + path, json=json, headers=self.auth(self.admin_key),
                             timeout=30, verify=self.verify)
        if expect is not None:
            assert r.status_code == expect, f"{method} {path}: {r.status_code} {r.text[:500]}"
        return r.json()

    def new_tenant(self, name: str, **fields) -> str:
        return self.admin("POST", "/tenants", {"name": name, **fields}, expect=201)["id"]

    def new_key(self, tenant_id: str, **fields) -> dict:
        """A new key of the tenant: its listing fields plus the secret under "key"."""
        return self.admin("POST", f"/tenants/{tenant_id}/keys", {"name": "e2e", **fields}, expect=201)

    def with_tenant(self, name: str = "e2e", grant_tokens: int = 1_000_000_000) -> "Server":
        """Makes a tenant with a large grant and uses its key for the tests' calls."""
        self.tenant_id = self.new_tenant(name, grant_tokens=grant_tokens)
        self.key = self.new_key(self.tenant_id)["key"]
        return self

    def log_tail(self, lines: int = 80) -> str:
        try:
            with open(self.log_path, errors="replace") as f:
                return "".join(f.readlines()[-lines:])
        except OSError as e:
            return f"(cannot read {self.log_path}: {e})"

    def client(self, **kw) -> openai.OpenAI:
        kw.setdefault("timeout", CLIENT_TIMEOUT_S)
        kw.setdefault("api_key", self.key)
        if self.verify is not True:
            kw.setdefault("http_client", openai.DefaultHttpxClient(verify=ssl.create_default_context(cafile=self.verify)))
        return openai.OpenAI(base_url=self.url + "/v1", max_retries=0, **kw)

    def metrics(self) -> str:
        r = requests.get(self.url + "/metrics", headers={"Authorization": f"Bearer {self.admin_key}"}, timeout=10,
                         verify=self.verify)
        assert r.status_code == 200, f"/metrics: {r.status_code} {r.text[:500]}"
        return r.text


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _start(name: str, extra_args: list, tmp_dir: str, admin_key: str, env: dict = None, ca: str = None,
           host: str = "127.0.0.1", prefix: tuple = ()) -> Server:
    """Starts `flywheel serve` with EXTRA_ARGS; ENV adds variables (FLYWHEEL_* included) to its environment.
    CA: the CA file of an HTTPS server's certificate (EXTRA_ARGS then hold --tls-cert/--tls-key).
    HOST: the address it listens on; PREFIX: a command that runs it (`ip netns exec NS`, which execs it,
    so the process is the server's own)."""
    binary = _env_path("FLYWHEEL_BIN")
    port = _free_port()
    data_dir = os.path.join(tmp_dir, "data")
    os.makedirs(data_dir, exist_ok=True)
    log_path = os.path.join(tmp_dir, "server.log")
    args = [*prefix, binary, "serve", "--listen", f"{host}:{port}", "--data-dir", data_dir, *extra_args]
    # The server reads FLYWHEEL_* settings from the environment: start from none of them.
    extra_env = env or {}
    env = {k: v for k, v in os.environ.items() if not k.startswith("FLYWHEEL_")}
    env.update(extra_env)
    env["FLYWHEEL_ADMIN_KEY"] = admin_key
    env.setdefault("RUST_LOG", "info")
    env["NO_COLOR"] = "1"
    with open(log_path, "wb") as log:
        log.write(("$ " + " ".join(args) + "\n").encode())
        log.flush()
        proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env)
    scheme = "https" if ca else "http"
    server = Server(name, f"{scheme}://{host}:{port}", proc, log_path, admin_key, ca)
    _SERVERS.append(server)

    deadline = time.monotonic() + HEALTH_TIMEOUT_S
    last = None
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(
                f"{name}: server exited with {proc.returncode} before /health answered; log {log_path}:\n"
                + server.log_tail(),
                pytrace=False,
            )
        try:
            r = requests.get(server.url + "/health", timeout=2, verify=server.verify)
            if r.status_code == 200:
                return server
            last = f"HTTP {r.status_code}: {r.text[:200]}"
        except requests.RequestException as e:
            last = repr(e)
        time.sleep(0.25)
    _stop(server)
    pytest.fail(
        f"{name}: /health did not answer 200 within {HEALTH_TIMEOUT_S}s (last: {last}); log {log_path}:\n"
        + server.log_tail(),
        pytrace=False,
    )


def _stop(server: Server) -> None:
    proc = server.proc
    if proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)  # by PID: only the process we started
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=10)


@pytest.fixture(scope="session")
def admin_key() -> str:
    return "fw-e2e-admin-" + secrets.token_hex(12)


@pytest.fixture(scope="session")
def paths() -> dict:
    return {
        "smol": _env_path("FLYWHEEL_SMOL_GGUF"),
        "qwen": _env_path("FLYWHEEL_QWEN_GGUF"),
        "tiny": _env_path("FLYWHEEL_TINY_GGUF"),
        "tiny-tools": _env_path("FLYWHEEL_TINY_TOOLS_GGUF"),
        "tiny-think": _env_path("FLYWHEEL_TINY_THINK_GGUF"),
        "tokenizer": _env_path("FLYWHEEL_QWEN_TOKENIZER"),
    }


@pytest.fixture(scope="session")
def server(tmp_path_factory, paths, admin_key):
    """Server 1: smol, qwen, tiny, tiny-tools and tiny-think in-process, 16 slots of 4096 tokens each."""
    tmp = str(tmp_path_factory.mktemp("server1"))
    args = []
    for name in ("smol", "qwen", "tiny", "tiny-tools", "tiny-think"):
        args += ["--model", f"{paths[name]}={name}"]
    args += ["--slots", str(SLOTS), "--slot-context", str(SLOT_CONTEXT)]
    threads = os.environ.get("FLYWHEEL_E2E_THREADS") or str(os.cpu_count() or 2)
    args += ["--threads", threads]
    s = _start("server1", args, tmp, admin_key).with_tenant()
    yield s
    _stop(s)


@pytest.fixture(scope="session")
def upstream_server(tmp_path_factory, server, admin_key):
    """Server 2: no local models, two external OpenAI-compatible upstreams (server 1's smol and qwen)."""
    tmp = str(tmp_path_factory.mktemp("server2"))
    cfg = os.path.join(tmp, "flywheel.toml")
    with open(cfg, "w") as f:
        f.write(
            "[[upstreams]]\n"
            'name = "remote-smol"\n'
            f'base_url = "{server.url}/v1"\n'
            f'api_key = "{server.key}"\n'
            'model = "smol"\n'
            "[[upstreams]]\n"
            'name = "remote-qwen"\n'
            f'base_url = "{server.url}/v1"\n'
            f'api_key = "{server.key}"\n'
            'model = "qwen"\n'
        )
    s = _start("server2", ["--config", cfg], tmp, admin_key)
    yield s
    _stop(s)


@pytest.fixture(scope="session")
def client(server) -> openai.OpenAI:
    c = server.client()
    yield c
    c.close()


@pytest.fixture(scope="session")
def client2(upstream_server) -> openai.OpenAI:
    c = upstream_server.client()
    yield c
    c.close()


@pytest.fixture(scope="session")
def qwen_tokenizer(paths):
    from tokenizers import Tokenizer

    return Tokenizer.from_file(paths["tokenizer"])


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    if report.failed and report.when in ("setup", "call"):
        for s in _SERVERS:
            report.sections.append((f"{s.name} log tail ({s.log_path})", s.log_tail(40)))
            if s.proc.poll() is not None:
                report.sections.append((f"{s.name} exited", f"exit status {s.proc.returncode}"))


# Figures the issues ask for as measurements, not assertions (cold start, ETA error, ...):
# tests record them with the `figure` fixture and they are printed at the end of every run,
# captured output or not.
_FIGURES: list = []


@pytest.fixture
def figure(request):
    def record(text: str) -> None:
        _FIGURES.append(f"{request.node.name}: {text}")
        print(f"[figure] {text}")

    return record


def pytest_terminal_summary(terminalreporter):
    if _FIGURES:
        terminalreporter.section("figures (measured, not asserted)")
        for line in _FIGURES:
            terminalreporter.write_line(line)
