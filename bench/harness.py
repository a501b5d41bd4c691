"""Plumbing shared by the benchmarks (``bench.failover``, ``bench.jwt``, ``bench.ratelimit``).

* Processes: :func:`free_port`, :func:`server_env` (the environment of a server child: the shell's app
  settings dropped, the development base plus what the benchmark sets), :func:`manage` (``manage.py``) and
  :class:`Gunicorn` (a server in its own session, stopped with its whole process group).
* The stack and the machine: :func:`fresh_stack` (``down`` + ``up``), :func:`git_state` /
  :func:`announce_code` (the code measured), :func:`load_average`.
* Command line and results: :func:`add_common_args` (``--name``, ``--port-base``, ``--out``, ``--publish``,
  ``--report``), :func:`args_meta`, :func:`command_line` (how the run was started, for its report),
  :func:`publish_report` (tables next to the raw results, the plot, with ``--publish`` copied under
  ``docs/bench/``), :func:`publish_run` (the same from a run's ``report`` module, with its section of
  ``docs/benchmarks.md``: :func:`docs_update` rewrites only the block between the benchmark's markers).
* The run itself: :func:`run_bench` (a benchmark's ``main``: ``--report`` re-renders, otherwise measure on
  the benchmark's own stack), :func:`teardown` (undo every step, take the stack down) and
  :func:`sigterm_as_interrupt` (SIGTERM cleans up like Ctrl-C).

What only one benchmark needs stays in its ``run`` module.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import os
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from types import FrameType
from typing import Any

import requests

from core.docs import between_markers
from devstack import DevstackError, Stack

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"
HOST = "127.0.0.1"
START_TIMEOUT = 45.0
# Settings of the app a server child must not inherit from the shell that starts the benchmark.
APP_ENV_PREFIXES = ("DATABASE_", "DB_", "REDIS_", "JWT_", "SECRET_KEY", "DJANGO_", "RATELIMIT", "OTEL_")


def say(msg: str) -> None:
    print(f"[bench] {time.strftime('%H:%M:%S')} {msg}", flush=True)


# ----------------------------------------------------------------------------------------------------------
# Processes
# ----------------------------------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return sock.getsockname()[1]


def server_env(**settings: str) -> dict[str, str]:
    """The environment gunicorn and manage.py run with: only what the benchmark sets, plus PATH and the like."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(APP_ENV_PREFIXES)}
    env.update(DJANGO_ENV="development", DOTENV_FILE="none", DEBUG="false", ALLOWED_HOSTS="127.0.0.1,localhost")
    env.update(settings)
    env.pop("LOG_DIR", None)
    return env


def manage(*args: str, env: dict[str, str]) -> None:
    done = subprocess.run(
        [sys.executable, "manage.py", *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300
    )
    if done.returncode:
        raise RuntimeError(f"manage.py {' '.join(args)} failed ({done.returncode}):\n{done.stdout}\n{done.stderr}")


class Gunicorn:
    """gunicorn serving Bulwark on a free loopback port, in its own session (so Ctrl-C reaches us only)."""

    def __init__(self, env: dict[str, str], log_path: Path, *, stdout_unread: bool = False) -> None:
        """``stdout_unread``: standard output goes to a pipe nobody reads (a stalled log sink: once its 64 KiB fill
        up, every write blocks); stderr still goes to ``log_path``."""
        self.url = f"http://{HOST}:{env['PORT']}"
        self.log_path = log_path
        self._log = log_path.open("wb")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "gunicorn", "settings.wsgi"],
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE if stdout_unread else self._log,
            stderr=self._log if stdout_unread else subprocess.STDOUT,
            start_new_session=True,
        )

    def wait_ready(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"gunicorn exited with {self.process.returncode}; see {self.log_path}")
            with contextlib.suppress(requests.RequestException):
                if requests.get(f"{self.url}/health/live", timeout=1).status_code == 200:
                    return
            time.sleep(0.2)
        raise RuntimeError(f"gunicorn did not answer within {START_TIMEOUT:.0f} s; see {self.log_path}")

    def stop(self) -> None:
        if self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=25)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(timeout=10)
        self._log.close()
        if self.process.stdout is not None:
            self.process.stdout.close()


# ----------------------------------------------------------------------------------------------------------
# The stack, the code measured, the machine
# ----------------------------------------------------------------------------------------------------------


def fresh_stack(stack: Stack, prefix: str = "") -> dict[str, str]:
    """``down`` + ``up``: every measurement starts from the same state. Returns the stack's env."""
    say(f"{prefix}building a fresh stack '{stack.name}' (port base {stack.port_base})")
    stack.down()
    return stack.up()


def git_state() -> dict[str, Any]:
    """The commit measured, and whether (and how) the work tree differed from it."""

    def git(*args: str) -> str:
        done = subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, timeout=30)
        return done.stdout if done.returncode == 0 else ""

    diff = git("diff", "HEAD", "--", "resilience", "shop", "settings")
    return {
        "commit": git("rev-parse", "HEAD").strip(),
        "changed_files": git("diff", "HEAD", "--name-only", "--", "resilience", "shop", "settings").split(),
        "diff_sha1": hashlib.sha1(diff.encode(), usedforsecurity=False).hexdigest() if diff else "",
    }


def announce_code(prefix: str = "") -> dict[str, Any]:
    """:func:`git_state`, said: the commit measured and any uncommitted changes to the app."""
    code = git_state()
    say(
        f"{prefix}measuring commit {code['commit'][:10]}"
        + (f" + uncommitted changes to {', '.join(code['changed_files'])}" if code["changed_files"] else "")
    )
    return code


def load_average() -> list[float]:
    """The machine's 1/5/15-minute load average (a shared machine's drift shows in it)."""
    return [round(x, 2) for x in os.getloadavg()]


# ----------------------------------------------------------------------------------------------------------
# Command line and results
# ----------------------------------------------------------------------------------------------------------


def add_common_args(p: argparse.ArgumentParser, *, name: str, port_base: int, prefix: str, docs_plot: Path) -> None:
    """The options every benchmark has: its stack, its results folder, publishing, re-rendering."""
    p.add_argument("--name", default=name, help="devstack stack name (%(default)s)")
    p.add_argument("--port-base", type=int, default=port_base, help="devstack port base (%(default)s)")
    p.add_argument("--out", type=Path, default=None, help=f"results folder (default bench/results/{prefix}-<time>)")
    p.add_argument("--publish", action="store_true", help=f"also write the plot to {docs_plot.relative_to(ROOT)}")
    p.add_argument("--report", type=Path, metavar="DIR", help="only re-render the report of an earlier run's folder")


def args_meta(args: argparse.Namespace) -> dict[str, Any]:
    """The arguments of a run, JSON-ready (for ``meta.json``)."""
    return {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()}


def command_line(prog: str) -> str:
    """The command that started this run (``python -m <prog> <its arguments>``), for the report to quote."""
    return shlex.join(["python", "-m", prog, *sys.argv[1:]])


def publish_report(
    out: Path, text: str, markdown: str, plot: Callable[[Path], Path], docs_plot: Path, publish: bool
) -> None:
    """Write the tables next to the raw results, draw the plot, and with ``publish`` copy it under docs/."""
    (out / "report.txt").write_text(text + "\n")
    (out / "report.md").write_text(markdown + "\n")
    print(text)
    try:
        png = plot(out / docs_plot.name)
    except ImportError:
        say("matplotlib is not installed (pip install -r requirements-dev.txt): no plot")
        return
    say(f"plot: {png}")
    if publish:
        docs_plot.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(png, docs_plot)
        say(f"plot published to {docs_plot.relative_to(ROOT)}")
    say(f"tables: {out / 'report.txt'} and {out / 'report.md'}")


def docs_update(docs: Path, marker: str, content: str) -> None:
    """``docs`` with the block between ``<!-- marker -->`` and ``<!-- /marker -->`` replaced by ``content``
    (the markers appended at the end first if absent); the rest of the page is left as it is."""
    text = docs.read_text()
    if f"<!-- {marker} -->\n" not in text or f"<!-- /{marker} -->" not in text:
        text = text.rstrip("\n") + f"\n\n<!-- {marker} -->\n<!-- /{marker} -->\n"
    docs.write_text(between_markers(text, marker, content))


def publish_run(out: Path, report: Any, docs_plot: Path, publish: bool) -> None:
    """Render a run with its ``report`` module (``MARKER``, ``load``, ``text_report``, ``section``, ``plot``);
    with ``publish`` also its plot under docs/ and its section of docs/benchmarks.md."""
    run = report.load(out)
    section = report.section(run)
    publish_report(out, report.text_report(run), section, lambda p: report.plot(run, p), docs_plot, publish)
    if publish:
        docs_update(ROOT / "docs" / "benchmarks.md", report.MARKER, section)
        say(f"section published to docs/benchmarks.md (between the {report.MARKER} markers)")


# ----------------------------------------------------------------------------------------------------------
# The run
# ----------------------------------------------------------------------------------------------------------


def teardown(cleanup: list[Callable[[], None]], stack: Stack) -> None:
    """Undo every step and take the stack down; a second Ctrl-C cannot interrupt it (each step is time-bounded)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    try:
        for undo in reversed(cleanup):
            try:
                undo()
            except Exception as exc:  # noqa: BLE001 - keep cleaning up whatever failed
                say(f"cleanup step failed: {exc}")
        try:
            stack.down()
        except DevstackError as exc:
            say(f"could not take the stack down: {exc}; run `python -m devstack --name {stack.name} down`")
    finally:
        signal.signal(signal.SIGINT, signal.default_int_handler)
        signal.signal(signal.SIGTERM, signal.SIG_DFL)


@contextlib.contextmanager
def sigterm_as_interrupt() -> Iterator[None]:
    def handler(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def bench_stack(args: argparse.Namespace) -> Stack:
    """The benchmark's own stack (``--name``, ``--port-base``), its notes said as ``devstack: ...``."""
    return Stack(name=args.name, port_base=args.port_base, echo=lambda m: say(f"devstack: {m}"))


def results_dir(args: argparse.Namespace, prefix: str) -> Path:
    """``--out``, else a new ``bench/results/<prefix>-<time>/``; created."""
    out = args.out or RESULTS / f"{prefix}-{time.strftime('%Y%m%d-%H%M%S')}"
    out.mkdir(parents=True, exist_ok=True)
    return out


def run_bench(
    args: argparse.Namespace,
    prefix: str,
    measure: Callable[[argparse.Namespace, Stack, Path, list[Callable[[], None]]], None],
    render_run: Callable[[Path, bool], None],
) -> int:
    """A benchmark's main: ``--report`` re-renders; otherwise measure on its own stack, always torn down."""
    if args.report:
        render_run(args.report, args.publish)
        return 0
    out = results_dir(args, prefix)
    stack = bench_stack(args)
    cleanup: list[Callable[[], None]] = []
    started = time.monotonic()
    interrupted = False
    try:
        with sigterm_as_interrupt():
            measure(args, stack, out, cleanup)
    except KeyboardInterrupt:
        say("interrupted; cleaning up")
        interrupted = True
    finally:
        teardown(cleanup, stack)
    if interrupted:
        return 130
    say(f"done in {time.monotonic() - started:.0f} s; raw results in {out}")
    render_run(out, args.publish)
    return 0
