"""A network namespace joined to this one by a veth pair, for cutting a process's links for real
(`ip link set ... down`), and a TCP relay that lets a process inside it reach a service listening
on this namespace's loopback (etcd, PostgreSQL). Needs root and iproute2; `LinkedNamespace.create`
says why when it cannot be made. Addresses are a /30 of 10.213.0.0/16, used only here."""

import secrets
import socket
import subprocess
import threading


def _ip(*args, ns=None):
    cmd = ["ip", *(["netns", "exec", ns, "ip"] if ns else []), *args]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=30)
    if r.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)}: {r.stderr.strip()}")


class LinkedNamespace:
    """A namespace `name` with `inner` (its address) linked to `outer` (this side's address)."""

    def __init__(self, name, veth, outer, inner):
        self.name, self.veth, self.outer, self.inner = name, veth, outer, inner

    @classmethod
    def create(cls):
        tag = secrets.token_hex(3)
        third = int(tag[:2], 16)
        name, veth, peer = f"fw-{tag}", f"fwo{tag}", f"fwi{tag}"
        outer, inner = f"10.213.{third}.1", f"10.213.{third}.2"
        _ip("netns", "add", name)
        try:
            _ip("link", "add", veth, "type", "veth", "peer", "name", peer)
            _ip("link", "set", peer, "netns", name)
            _ip("addr", "add", f"{outer}/30", "dev", veth)
            _ip("link", "set", veth, "up")
            _ip("addr", "add", f"{inner}/30", "dev", peer, ns=name)
            _ip("link", "set", peer, "up", ns=name)
            _ip("link", "set", "lo", "up", ns=name)
        except Exception:
            cls(name, veth, outer, inner).close()
            raise
        return cls(name, veth, outer, inner)

    def prefix(self):
        """The command prefix that runs a program inside the namespace."""
        return ["ip", "netns", "exec", self.name]

    def cut(self):
        _ip("link", "set", self.veth, "down")

    def restore(self):
        _ip("link", "set", self.veth, "up")

    def close(self):
        subprocess.run(["ip", "link", "del", self.veth], capture_output=True, timeout=30)
        subprocess.run(["ip", "netns", "del", self.name], capture_output=True, timeout=30)


class Relay:
    """Accepts on (host, an ephemeral port) and pipes each connection to 127.0.0.1:target."""

    def __init__(self, host, target):
        self.target = target
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind((host, 0))
        self.sock.listen(64)
        self.port = self.sock.getsockname()[1]
        self.conns = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while True:
            try:
                client, _ = self.sock.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(("127.0.0.1", self.target), timeout=10)
                upstream.settimeout(None)
            except OSError:
                client.close()
                continue
            self.conns += [client, upstream]
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    @staticmethod
    def _pipe(src, dst):
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def close(self):
        self.sock.close()
        for s in self.conns:
            try:
                s.close()
            except OSError:
                pass
