"""A real cluster on loopback: etcd (Debian's etcd-server, installed by scripts/cluster-deps.sh),
one PostgreSQL database, two gateways and three node agents, each a real `flywheel serve`
running SmolLM2 with one thread per replica. Faults are real: kill -9, SIGSTOP (a node frozen
longer than its lease, then back), and a link cut (`ip link set ... down`) between a fourth node in
its own network namespace and everything else, then restored. Deadlines are generous (5 x the lease TTL for membership and
placement, more for a model to load); the timings are bench figures, printed.

Skips (saying why) only when etcd cannot be installed."""

import os
import re
import secrets
import signal
import socket
import subprocess
import threading
import time

import pytest
import requests

from conftest import _env_path, _free_port, _start, _stop
from netns import LinkedNamespace, Relay

TTL = 2  # --cluster-lease-seconds
PLACE_S = 5 * TTL  # membership and placement deadline
LOAD_S = 60  # a replica placed to ready (model load on a busy machine)
SECRET = secrets.token_hex(24)


def _postgres_base() -> str:
    return os.environ.get("FLYWHEEL_TEST_POSTGRES_URL", "postgres://postgres@127.0.0.1:5432/test")


def _psql(sql: str):
    subprocess.run(["psql", _postgres_base(), "-v", "ON_ERROR_STOP=1", "-q", "-c", sql], check=True,
                   capture_output=True, timeout=60)


def _etcd_binary() -> str:
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    r = subprocess.run([os.path.join(root, "scripts", "cluster-deps.sh")], capture_output=True, text=True,
                       timeout=600)
    if r.returncode != 0:
        pytest.skip(f"etcd cannot be installed here: {r.stderr.strip()[-300:]}")
    return r.stdout.strip().splitlines()[-1]


def _wait(what: str, check, deadline_s: float, every: float = 0.2):
    """Polls CHECK until it returns a truthy value; fails naming WHAT after DEADLINE_S."""
    start = time.monotonic()
    last = None
    while time.monotonic() - start < deadline_s:
        try:
            last = check()
            if last:
                return last, time.monotonic() - start
        except (requests.RequestException, KeyError, ValueError) as e:
            last = repr(e)
        time.sleep(every)
    pytest.fail(f"{what}: not within {deadline_s:.0f}s (last: {str(last)[:800]})", pytrace=False)


class Cluster:
    def __init__(self, tmp_factory, admin_key, etcd_url, db, model):
        self.tmp_factory = tmp_factory
        self.admin_key = admin_key
        self.etcd_url = etcd_url
        self.db = db
        self.model = model
        self.procs = {}

    def start(self, name: str, role: str, etcd_url=None, db=None, ns=None):
        """NS: a LinkedNamespace to run it in (reaching etcd and the database at ETCD_URL and DB)."""
        tmp = str(self.tmp_factory.mktemp(name))
        args = ["--cluster", etcd_url or self.etcd_url, "--role", role, "--node-id", name,
                "--database-url", db or self.db, "--cluster-lease-seconds", str(TTL), "--node-threads", "4",
                "--node-memory-mib", "4096", "--drain-seconds", "2"]
        where = {"host": ns.inner, "prefix": tuple(ns.prefix())} if ns else {}
        s = _start(name, args, tmp, self.admin_key, env={"FLYWHEEL_CLUSTER_SECRET": SECRET}, **where)
        self.procs[name] = s
        return s

    def view(self, gateway: str) -> dict:
        return self.procs[gateway].admin("GET", "/cluster", expect=200)

    def placed(self, gateway: str, deployment: str) -> list:
        for p in self.view(gateway)["placements"]:
            if p["deployment"] == deployment:
                return p["replicas"]
        return []

    def ready_total(self, gateway: str, deployment: str) -> int:
        """Replicas of DEPLOYMENT the live nodes report running (ready or loading)."""
        total = 0
        for n in self.view(gateway)["nodes"]:
            for r in n["replicas"]:
                if r["deployment"] == deployment:
                    total += r["ready"] + r["loading"]
        return total

    def all_ready(self, gateway: str, deployment: str, want: int):
        view = self.view(gateway)
        placed = [p for p in view["placements"] if p["deployment"] == deployment]
        if not placed or len(placed[0]["replicas"]) != want:
            return False
        per_node = {}
        for r in placed[0]["replicas"]:
            per_node[r["node"]] = per_node.get(r["node"], 0) + 1
        nodes = {n["id"]: n for n in view["nodes"]}
        for node, count in per_node.items():
            loads = [r for r in nodes.get(node, {}).get("replicas", []) if r["deployment"] == deployment]
            if not loads or loads[0]["ready"] != count:
                return False
        return view


@pytest.fixture(scope="module")
def cluster(tmp_path_factory, admin_key):
    etcd = _etcd_binary()
    smol = _env_path("FLYWHEEL_SMOL_GGUF")
    tmp = str(tmp_path_factory.mktemp("etcd"))
    client_port, peer_port = _free_port(), _free_port()
    etcd_log = open(os.path.join(tmp, "etcd.log"), "wb")
    etcd_proc = subprocess.Popen(
        [etcd, "--name", "fw-test", "--data-dir", os.path.join(tmp, "data"),
         "--listen-client-urls", f"http://127.0.0.1:{client_port}",
         "--advertise-client-urls", f"http://127.0.0.1:{client_port}",
         "--listen-peer-urls", f"http://127.0.0.1:{peer_port}",
         "--initial-advertise-peer-urls", f"http://127.0.0.1:{peer_port}",
         "--initial-cluster", f"fw-test=http://127.0.0.1:{peer_port}"],
        stdout=etcd_log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    db = "fw_e2e_cluster_" + secrets.token_hex(4)
    _psql(f"CREATE DATABASE {db}")
    c = Cluster(tmp_path_factory, admin_key, f"etcd://127.0.0.1:{client_port}",
                f"{_postgres_base().rsplit('/', 1)[0]}/{db}", smol)
    try:
        _wait("etcd healthy", lambda: requests.get(f"http://127.0.0.1:{client_port}/health", timeout=1)
              .json().get("health") == "true", 30)
        c.start("g1", "gateway")
        c.start("g2", "gateway")
        for n in ("n1", "n2", "n3"):
            c.start(n, "node")
        c.procs["g1"].with_tenant("cluster")
        c.procs["g2"].key = c.procs["g1"].key
        yield c
    finally:
        for s in c.procs.values():
            if s.proc.poll() is None:
                try:
                    s.proc.send_signal(signal.SIGCONT)
                except ProcessLookupError:
                    pass
            _stop(s)
        etcd_proc.terminate()
        try:
            etcd_proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            etcd_proc.kill()
            etcd_proc.wait(timeout=10)
        etcd_log.close()
        _psql(f"DROP DATABASE IF EXISTS {db} WITH (FORCE)")


def _chat(server, model="smol", content="Say hello."):
    r = requests.post(server.url + "/v1/chat/completions", headers=server.auth(),
                      json={"model": model, "messages": [{"role": "user", "content": content}],
                            "max_tokens": 8, "temperature": 0}, timeout=120)
    assert r.status_code == 200, f"{server.name}: {r.status_code} {r.text[:500]}"
    body = r.json()
    assert body["choices"][0]["message"]["content"]
    return body


def test_three_replicas_land_on_three_nodes_and_serve_through_both_gateways(cluster, figure):
    g1, g2 = cluster.procs["g1"], cluster.procs["g2"]
    body = {"name": "smol", "model": cluster.model, "min_replicas": 3, "max_replicas": 3,
            "threads_per_replica": 1, "slots_per_replica": 2, "context_length": 512}
    started = time.monotonic()
    g1.admin("POST", "/deployments", body, expect=201)
    view, _ = _wait("3 replicas of smol ready", lambda: cluster.all_ready("g1", "smol", 3), LOAD_S)
    figure(f"cluster: 3 replicas placed and ready in {time.monotonic() - started:.1f}s")
    nodes = {r["node"] for r in cluster.placed("g1", "smol")}
    assert nodes == {"n1", "n2", "n3"}, view
    # Exactly 3 in the cluster, not one set per gateway; both gateways see the same placement.
    assert cluster.ready_total("g1", "smol") == 3
    assert cluster.placed("g2", "smol") == cluster.placed("g1", "smol")
    assert view["leader"] in ("g1", "g2")
    roles = {n["id"]: n["role"] for n in view["nodes"]}
    assert roles == {"g1": "gateway", "g2": "gateway", "n1": "node", "n2": "node", "n3": "node"}
    assert all(n["ttl_seconds"] == TTL and n["lease"] != "0" for n in view["nodes"])
    # Each node's budget is partly taken by its replica; gateways hold none.
    used = {n["id"]: (n["memory_used_bytes"], n["threads_used"]) for n in view["nodes"]}
    assert all(used[n][0] > 0 and used[n][1] == 1 for n in NODES), used
    assert used["g1"] == used["g2"] == (0, 0), used
    # The operator's console on the other gateway shows the same nodes and placement.
    console = requests.Session()
    r = console.post(g2.url + "/console/operator/sign-in", data={"admin_key": cluster.admin_key},
                     headers={"Origin": g2.url}, allow_redirects=False, timeout=30)
    assert r.status_code == 303, r.text
    page = console.get(g2.url + "/console/admin/nodes", timeout=30).text
    for n in view["nodes"]:
        row = re.search(r'<tr data-node="%s" data-role="(\w+)" data-memory-used="(\d+)" data-placed="(\d+)"' % n["id"], page)
        assert row, (n["id"], page[:2000])
        assert row.group(1) == n["role"] and int(row.group(2)) == n["memory_used_bytes"], (row.groups(), n)
        assert int(row.group(3)) == n["placed_replicas"], (row.groups(), n)
    assert "placement leader" in page and page.count('<tr data-node="n') >= 3
    # The deployment is the cluster's, visible from either gateway.
    assert g2.admin("GET", "/deployments/smol", expect=200)["spec"]["min_replicas"] == 3
    for s in (g1, g2, g1, g2):
        _chat(s)
    # The OpenAI client works through either gateway, streaming included.
    stream = g2.client().chat.completions.create(model="smol", messages=[{"role": "user", "content": "Count."}],
                                                 max_tokens=8, temperature=0, stream=True)
    text = "".join(chunk.choices[0].delta.content or "" for chunk in stream if chunk.choices)
    assert text


NODES = ("n1", "n2", "n3")


def _node_metric(cluster, node: str, name: str) -> float:
    """A counter summed over a node's series; the node's /metrics wants the cluster secret and
    labels every series with the node's id."""
    r = requests.get(cluster.procs[node].url + "/metrics", headers={"Authorization": f"Bearer {SECRET}"},
                     timeout=30)
    assert r.status_code == 200, r.text[:300]
    total = 0.0
    for line in r.text.splitlines():
        if line.startswith(name + "{") or line.startswith(name + " "):
            assert f'node="{node}"' in line, line
            total += float(line.rsplit(" ", 1)[1])
    return total


def test_a_shared_long_prefix_goes_to_one_node_and_reuses_its_kv(cluster):
    """Prefix affinity: both gateways send requests sharing a long system prompt to the same
    node (rendezvous hashing, no shared state), where the second finds the prefix cached;
    different prefixes spread over the nodes (sequential requests on idle nodes would all go
    to the first node by load alone). As the issue asks, at least 90% land together: a node's
    load report is up to a second old, so one pair in ten may be split by a stale report."""
    g1, g2 = cluster.procs["g1"], cluster.procs["g2"]
    # Both gateways see every replica ready (g1 alone was checked before).
    _wait("g2 sees 3 replicas ready", lambda: cluster.all_ready("g2", "smol", 3), PLACE_S)
    finished, cached = "flywheel_engine_requests_finished_total", "flywheel_prompt_tokens_cached_total"
    chosen, split = {}, []
    for p in range(10):
        system = f"Desk {p}: you are the help desk of museum number {p}. Answer in one short sentence. " * 8
        before = {n: (_node_metric(cluster, n, finished), _node_metric(cluster, n, cached)) for n in NODES}
        for i, gateway in enumerate((g1, g2)):
            r = requests.post(gateway.url + "/v1/chat/completions", headers=gateway.auth(), timeout=120, json={
                "model": "smol", "max_tokens": 4, "temperature": 0,
                "messages": [{"role": "system", "content": system},
                             {"role": "user", "content": f"Question {i}: when do you open?"}]})
            assert r.status_code == 200, r.text[:300]
        served = {n: _node_metric(cluster, n, finished) - before[n][0] for n in NODES}
        assert sum(served.values()) == 2, f"prefix {p}: {served}"
        if sorted(served.values()) != [0, 0, 2]:
            split.append((p, served))
            continue
        node = max(served, key=served.get)
        assert _node_metric(cluster, node, cached) > before[node][1], f"prefix {p}: no KV reuse on {node}"
        chosen[p] = node
    assert len(split) <= 1, f"pairs split over nodes: {split}"
    assert len(set(chosen.values())) >= 2, f"every prefix went to one node: {chosen}"
    # Without the secret a node's metrics are refused.
    r = requests.get(cluster.procs["n1"].url + "/metrics", timeout=30)
    assert r.status_code == 401 and "cluster secret" in r.json()["error"]["message"], r.text


def _moves(server) -> float:
    total = 0.0
    for line in server.metrics().splitlines():
        if line.startswith("flywheel_cluster_stream_moves_total"):
            total += float(line.rsplit(" ", 1)[1])
    return total


def _near_tie(tokens, text: str, at: int):
    """Where TEXT first departs from the undisturbed answer (character AT): the gap between the
    logprobs of that answer's token and the alternative TEXT took instead, if TEXT took the
    runner-up; None otherwise. The token TEXT took may begin before AT: against ' ' then '1',
    TEXT's ' retired' shares the space."""
    pos, gap = 0, None
    for t in tokens:
        if pos > at:
            break
        taken = [a for a in t.top_logprobs if a.token != t.token and a.token
                 and text.startswith(a.token, pos) and pos + len(a.token) > at]
        if taken:
            gap = t.logprob - max(a.logprob for a in taken)
        pos += len(t.token)
    return gap


def _around(tokens, at: int) -> list:
    """The undisturbed run's tokens near character AT, each with its top alternatives."""
    out, pos = [], 0
    for t in tokens:
        if at - 12 <= pos <= at + 2:
            out.append((t.token, round(t.logprob, 3), [(a.token, round(a.logprob, 3)) for a in t.top_logprobs]))
        pos += len(t.token)
    return out


def test_streams_on_a_killed_node_go_on_from_another_with_nothing_lost_or_repeated(cluster, figure):
    """Failover with migration: 10 streams at temperature 0 are running through both gateways
    when the node serving several of them is killed with kill -9. Every stream completes, the
    gateways resuming each lost stream on a survivor from the token ids it had delivered, with
    the text of the same request on an undisturbed run (no token repeated or missing), or one
    that departs from it only where the undisturbed run's top two tokens were a near-tie (the
    resumed node computes the delivered tokens' cache in one batch, not one by one, and
    floating point may order a tie differently; concurrent streams on one replica do too, moved
    or not: reported as a figure). A near-tie: the stream took the runner-up, whose logprob is
    within 0.5 of the top token's. Each stream has one
    request-log row whose usage is what its client was told (billed once)."""
    g1, g2 = cluster.procs["g1"], cluster.procs["g2"]
    system = "You are the storyteller of a lighthouse museum. Tell long, calm stories. " * 9
    messages = [{"role": "system", "content": system},
                {"role": "user", "content": "Tell me the story of the old keeper and the storm."}]
    finished = "flywheel_engine_requests_finished_total"
    before = {n: _node_metric(cluster, n, finished) for n in NODES}
    ref = g1.client().chat.completions.create(model="smol", messages=messages, max_tokens=160, temperature=0,
                                              logprobs=True, top_logprobs=2)
    served = {n: _node_metric(cluster, n, finished) - before[n] for n in NODES}
    # The prompt's affinity sends the first streams to this node while it has free slots.
    victim = max(served, key=served.get)
    assert served[victim] == 1, served
    ref_text = ref.choices[0].message.content
    assert ref.usage.completion_tokens > 40, ref.usage
    moves_before = _moves(g1) + _moves(g2)

    results, started = [None] * 10, [threading.Event() for _ in range(10)]

    def stream(i: int):
        try:
            client = (g1 if i % 2 else g2).client()
            text, usage, arrivals = "", None, []
            for chunk in client.chat.completions.create(model="smol", messages=messages, max_tokens=160,
                                                        temperature=0, stream=True,
                                                        stream_options={"include_usage": True}):
                if chunk.usage:
                    usage = chunk.usage
                if chunk.choices and chunk.choices[0].delta.content:
                    text += chunk.choices[0].delta.content
                    arrivals.append(time.monotonic())
                    started[i].set()
            results[i] = (text, usage, arrivals)
        except Exception as e:  # the assertion below names it
            results[i] = e
        finally:
            started[i].set()

    threads = [threading.Thread(target=stream, args=(i,), daemon=True) for i in range(10)]
    for t in threads:
        t.start()
    _wait("6 streams under way (every slot busy)", lambda: sum(e.is_set() for e in started) >= 6, LOAD_S)
    cluster.procs[victim].proc.send_signal(signal.SIGKILL)
    cluster.procs[victim].proc.wait(timeout=10)
    killed = time.monotonic()
    for t in threads:
        t.join(timeout=180)
    assert all(not t.is_alive() for t in threads), "a stream hung after the kill"
    failed = [r for r in results if isinstance(r, Exception)]
    assert not failed, failed
    ties = []
    for i, (text, usage, _) in enumerate(results):
        assert usage.prompt_tokens == ref.usage.prompt_tokens, (i, usage)
        if text == ref_text:
            assert usage.completion_tokens == ref.usage.completion_tokens, (i, usage)
            continue
        at = next((k for k, (a, b) in enumerate(zip(text, ref_text)) if a != b), min(len(text), len(ref_text)))
        gap = _near_tie(ref.choices[0].logprobs.content, text, at)
        assert gap is not None and gap < 0.5, (
            f"stream {i} departs from the undisturbed run at character {at}, not at a near-tie (gap {gap}): "
            f"{text[max(0, at - 40):at + 40]!r} vs {ref_text[max(0, at - 40):at + 40]!r}; "
            f"the undisturbed run there: {_around(ref.choices[0].logprobs.content, at)}")
        ties.append(f"stream {i} at character {at}, top-2 gap {gap:.3f}")
    moved = _moves(g1) + _moves(g2) - moves_before
    assert moved >= 1, "no stream was on the killed node"
    # One request-log row per stream (this test's prompt is its own), with the usage its client got.
    def logged():
        rows = requests.get(g1.url + "/v1/logs?limit=100", headers=g1.auth(), timeout=30).json()["data"]
        rows = [r for r in rows if r["model"] == "smol" and r["prompt_tokens"] == ref.usage.prompt_tokens]
        return rows if len(rows) >= 11 else None
    rows, _ = _wait("11 request-log rows (the reference and 10 streams)", logged, 30)
    assert len(rows) == 11 and all(r["status"] == 200 for r in rows), rows
    told = sorted([ref.usage.completion_tokens] + [r[1].completion_tokens for r in results])
    assert sorted(r["completion_tokens"] for r in rows) == told, (rows, told)
    # Per stream generating at the kill (chunks before and after it): how long until its next
    # chunk (a moved stream's resume time; the others' ordinary gap).
    gaps = sorted(next(t for t in r[2] if t > killed) - killed for r in results
                  if r[2][0] < killed < r[2][-1])
    figure(f"cluster: kill -9 under 10 streams -> {moved:.0f} moved to survivors; first chunk after the "
           f"kill p50 {gaps[len(gaps) // 2]:.2f}s, max {gaps[-1]:.2f}s over {len(gaps)} streams generating at "
           f"the kill; "
           f"the last stream ended {max(r[2][-1] for r in results) - killed:.1f}s after the kill; "
           f"departures at near-ties: {ties or 'none'}")
    # The node comes back (same id, new lease) for the tests after this one.
    cluster.start(victim, "node")
    _wait("3 replicas ready again", lambda: cluster.all_ready("g1", "smol", 3), LOAD_S)


def test_what_fits_nowhere_is_refused_with_the_numbers(cluster):
    body = {"name": "huge", "model": cluster.model, "min_replicas": 1, "threads_per_replica": 64}
    r = requests.post(cluster.procs["g1"].url + "/admin/v1/deployments", json=body,
                      headers=cluster.procs["g1"].auth(cluster.admin_key), timeout=30)
    assert r.status_code == 409, r.text
    err = r.json()["error"]
    assert err["code"] == "insufficient_capacity"
    assert "64 threads" in err["message"] and "4 threads" in err["message"], err


def test_internal_api_needs_the_cluster_secret(cluster):
    node = cluster.procs["n1"]
    req = {"model": "smol"}
    r = requests.post(node.url + "/internal/v1/generate", json=req, timeout=10)
    assert r.status_code == 401, r.text
    assert r.json()["error"]["code"] == "invalid_cluster_secret"
    r = requests.post(node.url + "/internal/v1/generate", json=req, timeout=10,
                      headers={"Authorization": "Bearer " + "x" * 48})
    assert r.status_code == 401
    # A node agent serves no public API.
    r = requests.post(node.url + "/v1/chat/completions", headers=node.auth(cluster.admin_key), timeout=10,
                      json={"model": "smol", "messages": [{"role": "user", "content": "hi"}]})
    assert r.status_code == 404


def test_a_killed_node_is_gone_and_its_replica_is_re_placed(cluster, figure):
    before = cluster.placed("g1", "smol")
    victim = cluster.procs["n3"]
    victim.proc.send_signal(signal.SIGKILL)
    victim.proc.wait(timeout=10)
    killed = time.monotonic()
    _, gone = _wait("n3 gone from the members",
                    lambda: "n3" not in {n["id"] for n in cluster.view("g1")["nodes"]}, PLACE_S)
    placed, replaced = _wait("n3's replica re-placed on a survivor",
                             lambda: (lambda p: p if len(p) == 3 and all(r["node"] != "n3" for r in p) else None)(
                                 cluster.placed("g1", "smol")), PLACE_S)
    # The replicas on survivors did not move.
    for r in before:
        if r["node"] != "n3":
            assert r in placed, (before, placed)
    _wait("3 replicas ready again", lambda: cluster.all_ready("g1", "smol", 3), LOAD_S)
    figure(f"cluster: kill -9 of a node -> gone from members {gone:.1f}s, replica re-placed "
           f"{time.monotonic() - killed:.1f}s after the kill (lease TTL {TTL}s)")
    for s in (cluster.procs["g1"], cluster.procs["g2"]):
        _chat(s)


def test_a_node_cut_off_past_its_lease_comes_back_and_its_stale_replica_stops(cluster):
    target = cluster.procs["n1"]
    n1_before = sum(1 for r in cluster.placed("g1", "smol") if r["node"] == "n1")
    assert n1_before >= 1
    target.proc.send_signal(signal.SIGSTOP)
    try:
        _wait("n1 (stopped) gone from the members",
              lambda: "n1" not in {n["id"] for n in cluster.view("g1")["nodes"]}, PLACE_S)
        _wait("n1's replicas re-placed",
              lambda: (lambda p: len(p) == 3 and all(r["node"] == "n2" for r in p))(cluster.placed("g1", "smol")),
              PLACE_S)
    finally:
        target.proc.send_signal(signal.SIGCONT)
    # It registers again under a new lease, and stops what it ran: nothing counted twice.
    def back_and_clean():
        nodes = {n["id"]: n for n in cluster.view("g1")["nodes"]}
        if "n1" not in nodes:
            return False
        return not any(r["deployment"] == "smol" and r["ready"] + r["loading"] > 0 for r in nodes["n1"]["replicas"])
    _wait("n1 back with its stale replica stopped", back_and_clean, PLACE_S + 20)
    _wait("3 replicas ready on n2", lambda: cluster.all_ready("g1", "smol", 3), LOAD_S)
    assert cluster.ready_total("g1", "smol") == 3


def test_the_leader_killed_the_other_gateway_takes_over(cluster, figure):
    leader = cluster.view("g1")["leader"]
    other = "g2" if leader == "g1" else "g1"
    before = cluster.placed(other, "smol")
    cluster.procs[leader].proc.send_signal(signal.SIGKILL)
    cluster.procs[leader].proc.wait(timeout=10)
    killed = time.monotonic()
    _wait(f"{other} elected leader", lambda: cluster.view(other)["leader"] == other, PLACE_S)
    figure(f"cluster: leader kill -9 -> {other} leads after {time.monotonic() - killed:.1f}s (TTL {TTL}s)")
    # Placements made before survive the change of leader.
    assert cluster.placed(other, "smol") == before
    # The new leader places: a new deployment lands.
    survivor = cluster.procs[other]
    survivor.admin("POST", "/deployments", {"name": "smol-b", "model": cluster.model, "min_replicas": 1,
                                            "threads_per_replica": 1, "slots_per_replica": 1,
                                            "context_length": 256}, expect=201)
    _wait("smol-b placed by the new leader and ready", lambda: cluster.all_ready(other, "smol-b", 1), LOAD_S)
    _chat(survivor)
    _chat(survivor, model="smol-b")


def _members(cluster, gateway):
    return {n["id"] for n in cluster.view(gateway)["nodes"]}


def test_a_node_behind_a_cut_link_is_replaced_and_stops_its_stale_replica_when_the_link_returns(cluster, figure):
    try:
        ns = LinkedNamespace.create()
    except (RuntimeError, OSError) as e:
        pytest.skip(f"no network namespace can be made here (it needs root and iproute2): {e}")
    # n4 reaches etcd and PostgreSQL (on this namespace's loopback) through relays on the link's
    # near end, so cutting the link cuts it from everything: etcd, the database and the gateways.
    etcd_port = int(cluster.etcd_url.rsplit(":", 1)[1])
    relays = [Relay(ns.outer, etcd_port), Relay(ns.outer, 5432)]
    gateway = next(g for g in ("g1", "g2") if cluster.procs[g].proc.poll() is None)
    g = cluster.procs[gateway]
    created = False
    try:
        db = cluster.db.replace("127.0.0.1:5432", f"{ns.outer}:{relays[1].port}")
        cluster.start("n4", "node", etcd_url=f"etcd://{ns.outer}:{relays[0].port}", db=db, ns=ns)
        _wait("n4 (in its namespace) a member", lambda: "n4" in _members(cluster, gateway), PLACE_S)
        # The roomiest node gets a new deployment's one replica: n4, which runs nothing.
        g.admin("POST", "/deployments", {"name": "cut", "model": cluster.model, "min_replicas": 1,
                                         "threads_per_replica": 1, "slots_per_replica": 1,
                                         "context_length": 256}, expect=201)
        created = True
        _wait("cut's replica ready on n4", lambda: cluster.all_ready(gateway, "cut", 1)
              and [r["node"] for r in cluster.placed(gateway, "cut")] == ["n4"], LOAD_S)
        _chat(g, model="cut")

        ns.cut()
        cut_at = time.monotonic()
        try:
            _, gone = _wait("n4 gone from the members after its link was cut",
                            lambda: "n4" not in _members(cluster, gateway), PLACE_S)
            placed, _ = _wait("cut's replica re-placed off n4", lambda: (lambda p: p if len(p) == 1 and
                                                                          p[0]["node"] != "n4" else None)(
                cluster.placed(gateway, "cut")), PLACE_S)
            replaced = time.monotonic() - cut_at
            _wait("cut ready on its new node", lambda: cluster.all_ready(gateway, "cut", 1), LOAD_S)
            _chat(g, model="cut")
        finally:
            ns.restore()
        restored = time.monotonic()

        def back_and_clean():
            nodes = {n["id"]: n for n in cluster.view(gateway)["nodes"]}
            if "n4" not in nodes:
                return False
            return not any(r["deployment"] == "cut" and r["ready"] + r["loading"] > 0
                           for r in nodes["n4"]["replicas"])
        _wait("n4 back with its stale replica stopped", back_and_clean, PLACE_S + 20)
        figure(f"cluster: link cut -> n4 gone from members {gone:.1f}s, replica re-placed {replaced:.1f}s; "
               f"link back -> n4 re-registered, stale replica stopped {time.monotonic() - restored:.1f}s "
               f"(TTL {TTL}s)")
        # Never counted twice: one placement, one replica running in the cluster.
        assert [r["node"] for r in cluster.placed(gateway, "cut")] == [placed[0]["node"]]
        assert cluster.ready_total(gateway, "cut") == 1
        _chat(g, model="cut")
    finally:
        if created:
            g.admin("DELETE", "/deployments/cut")
        if "n4" in cluster.procs:
            _stop(cluster.procs.pop("n4"))
        for r in relays:
            r.close()
        ns.close()


def test_an_unreachable_etcd_at_start_is_a_clear_error(tmp_path, cluster):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # nothing listens there once closed
    env = {k: v for k, v in os.environ.items() if not k.startswith("FLYWHEEL_")}
    env["FLYWHEEL_CLUSTER_SECRET"] = SECRET
    r = subprocess.run([_env_path("FLYWHEEL_BIN"), "serve", "--listen", f"127.0.0.1:{_free_port()}",
                        "--data-dir", str(tmp_path), "--database-url", cluster.db,
                        "--cluster", f"etcd://127.0.0.1:{port}", "--role", "gateway"],
                       capture_output=True, text=True, timeout=60, env=env)
    assert r.returncode != 0
    assert "cannot join the cluster" in r.stderr and f"127.0.0.1:{port}" in r.stderr, r.stderr[-1000:]
