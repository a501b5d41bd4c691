#!/usr/bin/env bash
# `make serve POOL=<class>`: one traffic class's pool in the foreground, as `make run` serves everything: the local
# stack up, .env completed, migrations, then gunicorn with SERVING_POOL=$POOL (that class and ops; other paths
# answer 404) on the pool's documented port: catalog 8101, auth 8111, checkout 8121, admin 8131, ops 8141 (PORT
# honoured). Every pool behind HAProxy at once: `python -m devstack pools up` (deploy/haproxy/README.md).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=.venv/bin/python
pool="${POOL:-}"
classes=$("$PY" -c 'from resilience.serving.classes import TRAFFIC_CLASSES; print(", ".join(TRAFFIC_CLASSES))')
if [ -z "$pool" ]; then
    echo "serve: say which pool to serve: make serve POOL=<class>, one of $classes." >&2
    exit 2
fi
if ! default_port=$("$PY" -m resilience.serving.haproxy port "$pool" 2>/dev/null); then
    echo "serve: POOL=$pool is not a traffic class; use one of $classes (make serve POOL=catalog)." >&2
    exit 2
fi

WHO=serve
source scripts/dev_prepare.sh

# A pool member is meant to sit behind one proxy (HAProxy appends X-Forwarded-For), unless told otherwise.
if [ -z "${TRUSTED_PROXY_COUNT:-}" ] && ! grep -q '^TRUSTED_PROXY_COUNT=' .env; then export TRUSTED_PROXY_COUNT=1; fi
port="${PORT:-$default_port}"
echo "Serving the $pool pool (SERVING_POOL=$pool: $pool and ops requests; other paths answer 404) on" \
    "http://127.0.0.1:$port (Ctrl-C stops it; 'make stop' stops the stack)."
SERVING_POOL="$pool" PORT="$port" exec .venv/bin/gunicorn settings.wsgi
