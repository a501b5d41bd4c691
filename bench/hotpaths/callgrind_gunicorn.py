"""gunicorn settings for a server run under callgrind by :mod:`bench.hotpaths.instructions`: the project's own
``gunicorn.conf.py`` as it is, with a longer worker timeout (valgrind runs the code 50-100 times slower) and, in
each worker, a control thread on a Unix socket (``$BENCH_CALLGRIND_DIR/control-<pid>.sock``) that zeroes
callgrind's counts (``zero``) and dumps them (``dump <label>``) through ``callgrind_ctl.c``'s client requests, so
the bench counts exactly the instructions between two points it chooses. Only for the bench: ``python -m gunicorn
-c bench/hotpaths/callgrind_gunicorn.py settings.wsgi``.
"""

import ctypes
import os
import runpy
import socket
import threading
from pathlib import Path

_project = runpy.run_path(str(Path(__file__).resolve().parents[2] / "gunicorn.conf.py"))
globals().update({name: value for name, value in _project.items() if not name.startswith("__")})
timeout = 600  # the project's 30 s would kill a worker that boots under valgrind


def post_worker_init(worker: object) -> None:
    """The project's hook, then the control thread."""
    _project["post_worker_init"](worker)
    control_start(Path(os.environ["BENCH_CALLGRIND_DIR"]), os.environ["BENCH_CALLGRIND_SHIM"])


def control_start(directory: Path, shim: str) -> None:
    lib = ctypes.CDLL(shim)
    lib.bench_dump.argtypes = [ctypes.c_char_p]
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(str(directory / f"control-{os.getpid()}.sock"))
    listener.listen(1)

    def serve() -> None:
        while True:
            conn, _ = listener.accept()
            with conn, conn.makefile("rwb") as channel:
                for line in channel:
                    command, _, label = line.decode().strip().partition(" ")
                    if command == "zero":
                        lib.bench_zero()
                    elif command == "dump":
                        lib.bench_dump(label.encode())
                    elif command == "on-valgrind":
                        channel.write(f"{lib.bench_on_valgrind()}\n".encode())
                        channel.flush()
                        continue
                    else:
                        channel.write(b"unknown command\n")
                        channel.flush()
                        continue
                    channel.write(b"ok\n")
                    channel.flush()

    threading.Thread(target=serve, name="bench-callgrind-control", daemon=True).start()
