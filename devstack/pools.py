"""Split pools against a running stack: gunicorn members per traffic class behind one HAProxy, all on loopback.

``python -m devstack [--name N] [--port-base B] pools ACTION``::

    pools up [--members N] [--classes catalog,auth:1,...] [--port P] [--base-port Q] [--workers W]
    pools status [--json]          one line per process and its health; exit 1 if one is down
    pools kill TARGET              SIGKILL (a crash): a member (catalog-2), a whole pool (catalog) or haproxy
    pools start TARGET             start what TARGET names that is not running; wait until HAProxy has it UP
    pools down                     SIGTERM everything, SIGKILL what is left after 10 s

``up`` starts, against the stack's database and Redis, N members per class (default 2 of catalog, auth, checkout
and admin; ``CLASS:N`` sets one class's count; ``ops`` may get a pool of its own, else every member answers
ops), each ``gunicorn settings.wsgi`` with ``SERVING_POOL=<class>``, ``PORT`` from the documented layout
(:func:`resilience.serving.haproxy.member_port`: stats on Q, catalog Q+1.., auth Q+11.., checkout Q+21..,
admin Q+31.., ops Q+41..; Q defaults to P+100), ``WEB_CONCURRENCY=W`` (default 1) and
``TRUSTED_PROXY_COUNT=1``, plus one ``haproxy`` on P with the configuration
:func:`resilience.serving.haproxy.render` writes for them. The members get this process's environment with
the stack's ``DATABASE_URL``, ``DATABASE_REPLICA_URLS`` and ``REDIS_URL`` over it, and read ``.env`` themselves
as ``make run``'s server does (``DOTENV_FILE`` honoured); that environment is validated once before anything
starts. ``up`` waits until HAProxy reports every member UP in every backend it belongs to (its admin socket),
then prints the URLs. It is idempotent: what runs is kept, what is missing is started.

Everything is a real background process in its own session (``kill`` takes the whole process group: master and
workers), recorded in ``.stack/<name>/pools/pools.json`` with its start time (a recycled pid is never taken for
it); logs, the configuration and HAProxy's socket are beside it. ``devstack down`` does not stop the pools:
run ``pools down`` first.
"""

from __future__ import annotations

import contextlib
import csv
import fcntl
import http.client
import io
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from resilience.serving.classes import OPS, TRAFFIC_CLASSES
from resilience.serving.haproxy import (
    MAX_MEMBERS,
    POOL_CLASSES,
    Layout,
    UsageError,
    layout_for,
    parse_classes,
    render,
)

from .haproxy_socket import admin_command
from .procs import LOOPBACK, DevstackError, alive, port_holder, port_in_use, proc_info, with_log
from .stack import Stack

STATE_VERSION = 1
DEFAULT_PORT = 8000
DEFAULT_WORKERS = 1
BASE_PORT_OFFSET = 100
START_TIMEOUT = 60.0  # members boot Django; several at once on a small machine
STOP_TIMEOUT = 10.0
HAPROXY = "haproxy"
STACK_VARIABLES = ("DATABASE_URL", "DATABASE_REPLICA_URLS", "REDIS_URL")


def find_haproxy() -> str:
    found = shutil.which("haproxy") or next(
        (path for path in ("/usr/sbin/haproxy", "/usr/local/sbin/haproxy") if Path(path).is_file()), None
    )
    if found is None:
        raise DevstackError(
            "haproxy is not installed, and the pools are served behind it. Install Debian's `haproxy` package "
            "(`apt-get install haproxy`; `make test` does it through scripts/bootstrap.sh)."
        )
    return found


@dataclass
class Proc:
    """A process recorded in the state file: its pid and start time (so a recycled pid is never taken for it)."""

    pid: int
    starttime: int

    def running(self) -> bool:
        info = proc_info(self.pid)
        return info is not None and info.starttime == self.starttime and alive(self.pid)


class Pools:
    """The pools of one stack (``stack`` gives the database, Redis, the state directory and the name)."""

    def __init__(self, stack: Stack) -> None:
        self.stack = stack
        self.dir = stack.state_dir / "pools"
        self.state_file = self.dir / "pools.json"
        self.root = stack.project_root

    # ---- state ------------------------------------------------------------------------------------------------

    def _note(self, message: str) -> None:
        print(f"devstack: [{self.stack.name}] pools: {message}", file=sys.stderr, flush=True)

    def _load(self) -> dict[str, Any] | None:
        try:
            state = json.loads(self.state_file.read_text())
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as error:
            raise DevstackError(f"cannot read {self.state_file}: {error}. Fix or delete it.") from None
        return state if isinstance(state, dict) and state.get("version") == STATE_VERSION else None

    def _require(self) -> dict[str, Any]:
        state = self._load()
        if state is None:
            raise DevstackError(
                f"stack '{self.stack.name}' has no pools (no {self.state_file}); start them with "
                f"`python -m devstack --name {self.stack.name} pools up`."
            )
        return state

    def _save(self, state: dict[str, Any]) -> None:
        self.dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        tmp = self.state_file.with_name(f"pools.json.tmp-{os.getpid()}")
        tmp.write_text(json.dumps(state, indent=2, sort_keys=True) + "\n")
        os.replace(tmp, self.state_file)

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        self.dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        fd = os.open(self.dir / ".lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                self._note("another pools command is working on this stack; waiting for it")
                fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)

    @staticmethod
    def _proc(entry: Mapping[str, Any]) -> Proc | None:
        if not entry.get("pid"):
            return None
        return Proc(int(entry["pid"]), int(entry.get("starttime") or 0))

    def _running(self, entry: Mapping[str, Any]) -> bool:
        proc = self._proc(entry)
        return proc is not None and proc.running()

    # ---- the layout -------------------------------------------------------------------------------------------

    @staticmethod
    def _layout(state: Mapping[str, Any]) -> Layout:
        return layout_for(
            state["counts"],
            base_port=state["base_port"],
            bind=f"{LOOPBACK}:{state['port']}",
            stats=True,
            stats_socket=state["haproxy"]["socket"],
            workers=state["workers"],
        )

    def _socket_path(self) -> str:
        path = self.dir / "haproxy.sock"
        if len(str(path)) > 100:  # a unix socket path is at most ~107 bytes
            path = self.stack.run_dir / f"pools-{os.getuid()}.sock"
        return str(path)

    def _environment(self, stack_env: Mapping[str, str]) -> dict[str, str]:
        """What every member gets before its own SERVING_POOL, PORT and WEB_CONCURRENCY."""
        env = {key: value for key, value in os.environ.items() if key != "DJANGO_SETTINGS_MODULE"}
        env.update({key: stack_env[key] for key in STACK_VARIABLES if key in stack_env})
        env["TRUSTED_PROXY_COUNT"] = "1"  # behind one proxy: the client address is X-Forwarded-For's last entry
        return env

    def _validated(self, env: Mapping[str, str], workers: int) -> Any:
        """The members' configuration, read as a member reads it (the environment over .env); its serving part."""
        from resilience.config.env import dotenv_read
        from resilience.config.loader import ConfigError, dotenv_path, load_config

        dotenv = dotenv_read(dotenv_path(env))
        effective = {**dotenv.values, **env, "WEB_CONCURRENCY": str(workers), "SERVING_POOL": "catalog"}
        try:
            return load_config(effective).serving
        except ConfigError as error:
            raise DevstackError(
                "the pool members' environment is invalid: "
                + "; ".join(problem.rstrip(".") for problem in error.problems)
                + ". Fix .env or the environment (`python manage.py validate_env` shows the whole analysis), or "
                "run `make run` once to write a development .env."
            ) from None

    # ---- up ---------------------------------------------------------------------------------------------------

    def up(
        self,
        counts: Mapping[str, int],
        *,
        port: int = DEFAULT_PORT,
        base_port: int | None = None,
        workers: int = DEFAULT_WORKERS,
    ) -> dict[str, Any]:
        base_port = port + BASE_PORT_OFFSET if base_port is None else base_port
        if workers < 1:
            raise DevstackError("--workers must be at least 1.")
        with self._locked():
            stack_env = self.stack.env(check=True)
            state = self._load()
            wanted = {"counts": dict(counts), "port": port, "base_port": base_port, "workers": workers}
            if state is not None and self._any_running(state):
                current = {key: state[key] for key in wanted}
                if current != wanted:
                    name = self.stack.name
                    raise DevstackError(
                        f"the pools of stack '{name}' are running with another layout ({_describe(current)}); run "
                        f"`python -m devstack --name {name} pools down` first to start {_describe(wanted)}."
                    )
            else:
                state = {"version": STATE_VERSION, **wanted, "members": {}, "haproxy": {}}
            haproxy = find_haproxy()
            env = self._environment(stack_env)
            serving = self._validated(env, workers)
            state["haproxy"].update(
                socket=self._socket_path(),
                config=str(self.dir / "haproxy.cfg"),
                log=str(self.dir / "haproxy.log"),
                stats_port=base_port,
            )
            layout = self._layout(state)
            members = {member.name: member for member in layout.every_member()}
            for name, member in members.items():
                traffic_class = name.rsplit("-", 1)[0]
                entry = state["members"].setdefault(name, {})
                entry.update(traffic_class=traffic_class, port=member.port, log=str(self.dir / f"{name}.log"))
            self._save(state)
            to_start = [name for name in members if not self._running(state["members"][name])]
            haproxy_down = not self._running(state["haproxy"])
            ports = [(name, state["members"][name]["port"]) for name in to_start]
            if haproxy_down:
                ports += [("haproxy", port), ("the haproxy stats listener", base_port)]
            self._check_ports(ports)
            t0 = time.monotonic()
            self._start_members(state, to_start, env)
            config = render(layout, serving)
            Path(state["haproxy"]["config"]).write_text(config)
            if haproxy_down:
                self._start_haproxy(state, haproxy)
            elif to_start:
                self._note("haproxy already running")
            self._wait_up(state, list(members))
            if to_start or haproxy_down:
                self._note(f"up in {time.monotonic() - t0:.1f} s")
            else:
                self._note("already running")
            return self.urls(state)

    def _any_running(self, state: Mapping[str, Any]) -> bool:
        entries = [*state.get("members", {}).values(), state.get("haproxy", {})]
        return any(self._running(entry) for entry in entries)

    def _check_ports(self, ports: list[tuple[str, int]]) -> None:
        for what, port in ports:
            if port_in_use(port):
                holder = port_holder(port)
                by = f" by {holder}" if holder else ""
                raise DevstackError(
                    f"port {port} on {LOOPBACK}, which the pools need for {what}, is already in use{by}. Stop it, or "
                    "choose other ports with --port P (HAProxy) and --base-port Q (stats on Q, members from Q+1)."
                )

    def _start_members(self, state: dict[str, Any], names: list[str], env: Mapping[str, str]) -> None:
        started: list[str] = []
        for name in names:
            entry = state["members"][name]
            member_env = {
                **env,
                "SERVING_POOL": entry["traffic_class"],
                "PORT": str(entry["port"]),
                "WEB_CONCURRENCY": str(state["workers"]),
            }
            self._note(f"starting {name} (SERVING_POOL={entry['traffic_class']}, port {entry['port']})")
            entry.update(self._spawn([sys.executable, "-m", "gunicorn", "settings.wsgi"], member_env, entry["log"]))
            started.append(name)
        self._save(state)
        deadline = time.monotonic() + START_TIMEOUT
        for name in started:
            entry = state["members"][name]
            while not _answers(entry["port"], "/health/live"):
                if not self._running(entry):
                    raise DevstackError(with_log(f"{name} exited while starting.", Path(entry["log"])))
                if time.monotonic() > deadline:
                    raise DevstackError(
                        with_log(
                            f"{name} did not answer /health/live within {START_TIMEOUT:.0f} s.", Path(entry["log"])
                        )
                    )
                time.sleep(0.1)

    def _spawn(self, argv: list[str], env: Mapping[str, str], log: str) -> dict[str, int]:
        with open(log, "ab") as handle:
            handle.write(f"--- devstack pools: {' '.join(argv)} at {time.strftime('%Y-%m-%d %H:%M:%S')}\n".encode())
            handle.flush()
            process = subprocess.Popen(
                argv,
                cwd=self.root,
                env=dict(env),
                stdin=subprocess.DEVNULL,
                stdout=handle,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # its own process group: `kill` takes master and workers at once
            )
        info = proc_info(process.pid)
        return {"pid": process.pid, "starttime": info.starttime if info else 0}

    def _start_haproxy(self, state: dict[str, Any], haproxy: str) -> None:
        entry = state["haproxy"]
        check = subprocess.run(
            [haproxy, "-c", "-q", "-f", entry["config"]], capture_output=True, text=True, timeout=30, check=False
        )
        if check.returncode != 0:
            output = (check.stderr or check.stdout).strip().replace("\n", " | ")
            raise DevstackError(f"haproxy refuses the rendered configuration {entry['config']}: {output}")
        with contextlib.suppress(FileNotFoundError):
            os.unlink(entry["socket"])
        self._note(f"starting haproxy (port {state['port']}, stats {state['base_port']})")
        entry.update(self._spawn([haproxy, "-db", "-f", entry["config"]], os.environ, entry["log"]))
        self._save(state)
        deadline = time.monotonic() + 10
        while not Path(entry["socket"]).exists():
            if not self._running(entry):
                raise DevstackError(with_log("haproxy exited while starting.", Path(entry["log"])))
            if time.monotonic() > deadline:
                raise DevstackError(with_log("haproxy did not open its admin socket within 10 s.", Path(entry["log"])))
            time.sleep(0.05)

    def _wait_up(self, state: Mapping[str, Any], names: list[str], timeout: float = START_TIMEOUT) -> float:
        """Wait until HAProxy has each of ``names`` UP in every backend it is in; returns the seconds it took."""
        t0 = time.monotonic()
        deadline = t0 + timeout
        while True:
            servers = self.haproxy_servers(state)
            pending = [
                f"{backend}/{name}"
                for (backend, name), status in servers.items()
                if name in names and not status.startswith("UP")
            ]
            missing = [name for name in names if not any(server == name for _, server in servers)]
            if servers and not pending and not missing:
                return time.monotonic() - t0
            if not self._running(state["haproxy"]):
                raise DevstackError(with_log("haproxy is not running.", Path(state["haproxy"]["log"])))
            if time.monotonic() > deadline:
                raise DevstackError(
                    f"HAProxy does not report {', '.join(pending or missing)} UP after {timeout:.0f} s; see "
                    f"`python -m devstack --name {self.stack.name} pools status` and the logs in {self.dir}."
                )
            time.sleep(0.1)

    # ---- what runs --------------------------------------------------------------------------------------------

    def haproxy_servers(self, state: Mapping[str, Any]) -> dict[tuple[str, str], str]:
        """(backend, server) -> HAProxy's status (UP, DOWN, UP 1/2, MAINT...) from its admin socket; {} if none."""
        reply = admin_command(state["haproxy"].get("socket", ""), "show stat")
        if not reply:
            return {}
        rows = csv.DictReader(io.StringIO(reply.lstrip("# ")))
        return {
            (row["pxname"], row["svname"]): row["status"]
            for row in rows
            if row.get("svname") not in ("FRONTEND", "BACKEND") and row.get("pxname") in TRAFFIC_CLASSES
        }

    def urls(self, state: Mapping[str, Any]) -> dict[str, Any]:
        members = {
            name: f"http://{LOOPBACK}:{entry['port']}" for name, entry in sorted(state["members"].items(), key=_order)
        }
        return {
            "url": f"http://{LOOPBACK}:{state['port']}",
            "stats": f"http://{LOOPBACK}:{state['base_port']}/stats",
            "members": members,
        }

    def status(self) -> dict[str, Any]:
        state = self._require()
        servers = self.haproxy_servers(state) if self._running(state["haproxy"]) else {}
        members = {}
        for name, entry in sorted(state["members"].items(), key=_order):
            running = self._running(entry)
            checks = {backend: status for (backend, server), status in servers.items() if server == name}
            members[name] = {
                "traffic_class": entry["traffic_class"],
                "port": entry["port"],
                "pid": entry.get("pid") if running else None,
                "running": running,
                "live": running and _answers(entry["port"], "/health/live"),
                "haproxy": checks,
                "log": entry["log"],
            }
        haproxy = state["haproxy"]
        return {
            "haproxy": {
                "running": self._running(haproxy),
                "pid": haproxy.get("pid") if self._running(haproxy) else None,
                "port": state["port"],
                "stats_port": state["base_port"],
                "config": haproxy.get("config"),
                "log": haproxy.get("log"),
            },
            "members": members,
            "url": f"http://{LOOPBACK}:{state['port']}",
            "stats": f"http://{LOOPBACK}:{state['base_port']}/stats",
        }

    @staticmethod
    def healthy(status: Mapping[str, Any]) -> bool:
        members = status["members"].values()
        return status["haproxy"]["running"] and all(
            member["running"] and member["haproxy"] and all(s.startswith("UP") for s in member["haproxy"].values())
            for member in members
        )

    @staticmethod
    def format_status(status: Mapping[str, Any]) -> str:
        haproxy = status["haproxy"]
        state = "up" if haproxy["running"] else "DOWN"
        lines = [
            f"{'haproxy':<12}{state:<6}{status['url']}  stats {status['stats']}"
            + (f"  pid {haproxy['pid']}" if haproxy["running"] else f"  log {haproxy['log']}")
        ]
        for name, member in status["members"].items():
            state = "up" if member["running"] and member["live"] else "hung" if member["running"] else "DOWN"
            checks = ", ".join(f"{backend} {value}" for backend, value in member["haproxy"].items()) or "-"
            tail = f"pid {member['pid']}" if member["running"] else f"log {member['log']}"
            lines.append(f"{name:<12}{state:<6}port {member['port']:<6} haproxy: {checks}  {tail}")
        return "\n".join(lines)

    # ---- kill / start / down ----------------------------------------------------------------------------------

    def _targets(self, state: Mapping[str, Any], target: str) -> list[str]:
        if target == HAPROXY:
            return [HAPROXY]
        if target in state["members"]:
            return [target]
        names = [name for name, entry in state["members"].items() if entry["traffic_class"] == target]
        if not names:
            known = ", ".join([HAPROXY, *sorted({e["traffic_class"] for e in state["members"].values()})])
            raise DevstackError(
                f"{target!r} is neither a member nor a pool of stack '{self.stack.name}': use a member name "
                f"(`pools status` lists them, e.g. catalog-1) or one of {known}."
            )
        return sorted(names, key=lambda name: _order((name, None)))

    def _entry(self, state: dict[str, Any], name: str) -> dict[str, Any]:
        return state["haproxy"] if name == HAPROXY else state["members"][name]

    def kill(self, target: str) -> list[str]:
        """SIGKILL each process ``target`` names, with its whole process group (a crash, not a stop)."""
        with self._locked():
            state = self._require()
            killed = []
            for name in self._targets(state, target):
                entry = self._entry(state, name)
                proc = self._proc(entry)
                if proc is None or not proc.running():
                    self._note(f"{name} is not running")
                    continue
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                _wait_dead(proc, 5)
                killed.append(name)
            return killed

    def start(self, target: str) -> float:
        """Start what ``target`` names that is not running; wait until HAProxy reports it UP. Returns seconds."""
        with self._locked():
            state = self._require()
            self.stack.env(check=True)
            names = self._targets(state, target)
            t0 = time.monotonic()
            if HAPROXY in names:
                if self._running(state["haproxy"]):
                    self._note("haproxy is already running")
                else:
                    self._check_ports([("haproxy", state["port"]), ("the haproxy stats listener", state["base_port"])])
                    self._start_haproxy(state, find_haproxy())
                members = list(state["members"])
            else:
                members = names
                to_start = [name for name in names if not self._running(state["members"][name])]
                if not to_start:
                    self._note(f"{', '.join(names)} already running")
                env = self._environment(self.stack.env(check=True))
                self._check_ports([(name, state["members"][name]["port"]) for name in to_start])
                self._start_members(state, to_start, env)
            self._wait_up(state, members)
            return time.monotonic() - t0

    def down(self) -> None:
        with self._locked():
            state = self._load()
            if state is None:
                self._note("nothing to take down")
                return
            procs = {
                name: proc
                for name, entry in [*state["members"].items(), (HAPROXY, state["haproxy"])]
                if (proc := self._proc(entry)) is not None and proc.running()
            }
            for proc in procs.values():
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGTERM)
            deadline = time.monotonic() + STOP_TIMEOUT
            for name, proc in procs.items():
                if not _wait_dead(proc, max(0.0, deadline - time.monotonic())):
                    self._note(f"{name} did not stop within {STOP_TIMEOUT:.0f} s of SIGTERM; SIGKILL")
                    with contextlib.suppress(ProcessLookupError):
                        os.killpg(proc.pid, signal.SIGKILL)
                    _wait_dead(proc, 5)
            still = [name for name, proc in procs.items() if proc.running()]
            if still:
                raise DevstackError(f"could not stop {', '.join(still)}; the state in {self.state_file} is kept.")
            self.state_file.unlink()
            with contextlib.suppress(FileNotFoundError):
                os.unlink(state["haproxy"].get("socket", ""))
            self._note(f"down ({len(procs)} process(es) stopped; logs kept in {self.dir})")


# ---- helpers --------------------------------------------------------------------------------------------------


def _order(item: tuple[str, Any]) -> tuple[int, int]:
    name = item[0]
    traffic_class, _, number = name.rpartition("-")
    index = TRAFFIC_CLASSES.index(traffic_class) if traffic_class in TRAFFIC_CLASSES else len(TRAFFIC_CLASSES)
    return index, int(number) if number.isdigit() else 0


def _describe(layout: Mapping[str, Any]) -> str:
    counts = ", ".join(f"{name} x{count}" for name, count in layout["counts"].items())
    return f"{counts}; port {layout['port']}, base port {layout['base_port']}, {layout['workers']} worker(s) each"


def _answers(port: int, path: str, timeout: float = 1.0) -> bool:
    """Does the server on ``port`` answer ``path`` with 200?"""
    connection = http.client.HTTPConnection(LOOPBACK, port, timeout=timeout)
    try:
        connection.request("GET", path, headers={"Host": "localhost"})
        return connection.getresponse().status == 200
    except (OSError, http.client.HTTPException):
        return False
    finally:
        connection.close()


def _wait_dead(proc: Proc, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while proc.running():
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.02)
    return True


# ---- command line (devstack/__main__.py parses, then calls this) ----------------------------------------------


def main(stack: Stack, args: Any) -> int:
    pools = Pools(stack)
    action = args.pools_command
    if action == "up":
        if not 1 <= args.members <= MAX_MEMBERS:
            raise DevstackError(f"--members must be between 1 and {MAX_MEMBERS}.")
        try:
            counts = parse_classes(args.classes or ",".join(POOL_CLASSES), args.members)
        except UsageError as error:
            raise DevstackError(str(error)) from None
        if OPS in counts:
            pools._note("an ops pool of its own serves the probes, metrics and JWKS")
        urls = pools.up(counts, port=args.port, base_port=args.base_port, workers=args.workers)
        print(f"{'HAProxy:':<12}{urls['url']}")
        print(f"{'Stats:':<12}{urls['stats']}")
        for name, url in urls["members"].items():
            print(f"{name + ':':<12}{url}")
    elif action == "down":
        pools.down()
    elif action == "status":
        status = pools.status()
        print(json.dumps(status, indent=2) if args.json else Pools.format_status(status))
        return 0 if Pools.healthy(status) else 1
    elif action == "kill":
        killed = pools.kill(args.target)
        if killed:
            pools._note(f"killed {', '.join(killed)} (SIGKILL)")
    elif action == "start":
        seconds = pools.start(args.target)
        pools._note(f"{args.target} UP in HAProxy after {seconds:.1f} s")
    return 0
