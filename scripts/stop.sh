#!/usr/bin/env bash
# `make stop`: stop the gunicorn started by `make run` (if any) and the local stack; data is kept.
set -euo pipefail
cd "$(dirname "$0")/.."
pidfile=.stack/dev/gunicorn.pid
if [ -f "$pidfile" ] && kill -0 "$(cat "$pidfile")" 2>/dev/null; then
    kill -TERM "$(cat "$pidfile")"
    for _ in $(seq 1 50); do kill -0 "$(cat "$pidfile" 2>/dev/null || echo 0)" 2>/dev/null || break; sleep 0.2; done
    echo "stop: gunicorn stopped"
fi
if [ -x .venv/bin/python ]; then
    .venv/bin/python -m devstack --name dev stop
else
    echo "stop: no .venv here, so nothing was started by make run"
fi
