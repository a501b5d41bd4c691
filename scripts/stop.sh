#!/usr/bin/env bash
# `make stop`: stop the gunicorn and the fake payment gateway started by `make run` (if any) and the local
# stack; data is kept.
set -euo pipefail
cd "$(dirname "$0")/.."
pidfile=.stack/dev/gunicorn.pid
if [ -f "$pidfile" ] && kill -0 "$(cat "$pidfile")" 2>/dev/null; then
    kill -TERM "$(cat "$pidfile")"
    for _ in $(seq 1 50); do kill -0 "$(cat "$pidfile" 2>/dev/null || echo 0)" 2>/dev/null || break; sleep 0.2; done
    echo "stop: gunicorn stopped"
fi
gw_pid=.stack/dev/fake_gateway.pid
if [ -f "$gw_pid" ] && kill -0 "$(cat "$gw_pid")" 2>/dev/null; then
    kill -TERM "$(cat "$gw_pid")"
    for _ in $(seq 1 50); do [ -f "$gw_pid" ] || break; sleep 0.1; done
    echo "stop: fake payment gateway stopped"
fi
if [ -x .venv/bin/python ]; then
    .venv/bin/python -m devstack --name dev stop
else
    echo "stop: no .venv here, so nothing was started by make run"
fi
