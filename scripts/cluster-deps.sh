#!/usr/bin/env bash
# Installs etcd (Debian's etcd-server) for the cluster tests if it is missing, and prints the
# path of the etcd binary. Exits non-zero, saying why, if it cannot be installed.
set -euo pipefail
find_etcd() {
  command -v etcd 2>/dev/null && return 0
  [ -x /usr/bin/etcd ] && { echo /usr/bin/etcd; return 0; }
  return 1
}
if find_etcd; then exit 0; fi
echo "[cluster-deps] installing etcd-server (Debian package)" >&2
SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
if ! { $SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends etcd-server >/dev/null; }; then
  echo "[cluster-deps] cannot install etcd-server with apt-get" >&2
  exit 1
fi
# The package may start a system etcd on 2379; the tests run their own on other ports.
find_etcd || { echo "[cluster-deps] etcd-server installed but no etcd binary found" >&2; exit 1; }
