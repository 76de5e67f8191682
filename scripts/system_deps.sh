#!/usr/bin/env bash
# The Debian packages the test tiers start for real: PostgreSQL and Redis (tests/cluster, the lab topology
# on CeleryExecutor) and Chromium (tests/browser, the Airflow UI). Installs only what is missing; needs root
# (or passwordless sudo). Safe to run twice.
set -euo pipefail
need=()
command -v redis-server >/dev/null || need+=(redis-server)
[ -x /usr/lib/postgresql/15/bin/postgres ] || need+=(postgresql)
command -v chromium >/dev/null || need+=(chromium)
command -v unshare >/dev/null || need+=(util-linux)
[ ${#need[@]} -eq 0 ] && exit 0
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo -n"
echo "installing Debian packages: ${need[*]}"
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need[@]}" >/dev/null
# the Debian postgresql package starts a cluster of its own on 5432; the tests start theirs on free ports
$SUDO service postgresql stop >/dev/null 2>&1 || true
$SUDO service redis-server stop >/dev/null 2>&1 || true
