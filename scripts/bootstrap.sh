#!/usr/bin/env bash
# Make this machine able to run Bulwark: Python venv with the pinned packages, PostgreSQL >= 15 and
# Redis binaries; with BOOTSTRAP_TEST_TOOLS=1 (set by `make test`) also what only the suite uses: Debian's
# chromium, which the dashboard's browser test drives as /usr/bin/chromium, and prometheus (promtool and the
# server, for the /metrics tests), haproxy (the split pools behind their proxy), and patroni, etcd-server,
# etcd-client and redis-sentinel (the scale-out topology of `devstack ha`), valgrind, gcc and perf (the hot-path
# bench's instruction and system-call counts). Installs Debian packages with
# apt-get when they are missing and apt is usable (as root, or through passwordless sudo); otherwise says
# exactly what to install and exits 1.
set -euo pipefail
cd "$(dirname "$0")/.."

VENV=.venv
PYTHON=${PYTHON:-python3}

say() { printf 'bootstrap: %s\n' "$*" >&2; }

apt_install() {
    local packages=("$@")
    local runner=()
    if [ "$(id -u)" -ne 0 ]; then
        if command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
            runner=(sudo -n)
        else
            say "missing: ${packages[*]}. Install them (e.g. 'sudo apt-get install -y ${packages[*]}') and run again."
            exit 1
        fi
    fi
    if ! command -v apt-get >/dev/null 2>&1; then
        say "missing: ${packages[*]}, and apt-get is not available here. Install them with your package manager."
        exit 1
    fi
    say "installing ${packages[*]} with apt-get"
    "${runner[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -qq >/dev/null
    "${runner[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${packages[@]}" >/dev/null
}

have_postgres() {
    local dir
    for dir in /usr/lib/postgresql/*/bin; do
        [ -x "$dir/pg_ctl" ] && [ -x "$dir/pg_basebackup" ] && [ "$(basename "$(dirname "$dir")")" -ge 15 ] 2>/dev/null && return 0
    done
    command -v pg_ctl >/dev/null 2>&1 && command -v pg_basebackup >/dev/null 2>&1
}

missing=()
have_postgres || missing+=(postgresql)
command -v redis-server >/dev/null 2>&1 || missing+=(redis-server)
if [ "${BOOTSTRAP_TEST_TOOLS:-}" = 1 ]; then
    [ -x /usr/bin/chromium ] || missing+=(chromium)
    [ -x /usr/bin/promtool ] || missing+=(prometheus)  # promtool and a real server for the /metrics tests
    [ -x /usr/sbin/haproxy ] || missing+=(haproxy)  # the split pools' reference proxy (tests/system, tests/deploy)
    # devstack ha: Patroni on etcd, Redis Sentinel (tests/system/test_ha_failover.py)
    command -v patroni >/dev/null 2>&1 || missing+=(patroni)
    command -v etcd >/dev/null 2>&1 || missing+=(etcd-server)
    command -v etcdctl >/dev/null 2>&1 || missing+=(etcd-client)
    command -v redis-sentinel >/dev/null 2>&1 || missing+=(redis-sentinel)
    # valgrind's callgrind, its headers and gcc: the hot-path bench's instruction counts (tests/bench)
    { command -v valgrind >/dev/null 2>&1 && [ -f /usr/include/valgrind/callgrind.h ]; } || missing+=(valgrind)
    command -v gcc >/dev/null 2>&1 || missing+=(gcc)
    command -v perf >/dev/null 2>&1 || missing+=(linux-perf)  # its system calls per request
fi
"$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null || {
    say "Python 3.11 or newer is needed as '$PYTHON' (set PYTHON=/path/to/python3.11)."; exit 1; }
[ -x "$VENV/bin/python" ] || "$PYTHON" -c 'import ensurepip, venv' 2>/dev/null || missing+=(python3-venv)
[ ${#missing[@]} -eq 0 ] || apt_install "${missing[@]}"

if [ ! -x "$VENV/bin/python" ]; then
    say "creating $VENV"
    "$PYTHON" -m venv "$VENV"
fi
stamp="$VENV/.requirements.sha256"
wanted=$(cat requirements.txt requirements-dev.txt | sha256sum | cut -d' ' -f1)
if [ "$(cat "$stamp" 2>/dev/null)" != "$wanted" ]; then
    say "installing Python packages (requirements-dev.txt)"
    "$VENV/bin/python" -m pip install -q --disable-pip-version-check -r requirements-dev.txt
    echo "$wanted" > "$stamp"
fi
