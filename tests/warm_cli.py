"""A warm ``dalle-data`` for tests that run the command line as a user does, many times.

Each ``python -m dalle_data generate`` pays seconds of imports (torch, diffusers, open_clip) before it does
anything; the examples test runs some eighty command lines. ``WarmCli`` starts one server process that
imports all of that once and then, for each command, forks a fresh process from it: a real process with
its own pid, signals, working directory, environment and exit status, that starts where the imports end.

The command line still goes through bash as written (quotes, redirections, pipes): a small ``dalle-data``
client first on ``PATH`` hands its argv, working directory, environment and its stdin, stdout and stderr
(the file descriptors themselves, over a UNIX socket) to the server, forwards SIGINT and SIGTERM to the
forked process, and exits with its status. Nothing is imported in the server that the command would not
import itself, and the server starts nothing that runs beside the command (no threads), so a forked
command behaves as a cold one: the examples test checks the same exit codes and messages.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path

WARM_IMPORTS = ("dalle_data.cli", "dalle_data.job", "dalle_data.probe", "dalle_data.probe.learners",
                "dalle_data.report", "dalle_data.review", "dalle_data.scoring", "dalle_data.generators.registry",
                "dalle_data.writers.parquet", "diffusers", "open_clip", "torch", "pyarrow.parquet")

CLIENT = '''\
import json, os, signal, socket, struct, sys
sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
sock.connect(os.environ["DALLE_DATA_WARM_SOCKET"])
message = json.dumps({"argv": sys.argv[1:], "cwd": os.getcwd(), "env": dict(os.environ)}).encode()
socket.send_fds(sock, [struct.pack("!I", len(message)) + message], [0, 1, 2])
stream = sock.makefile("rb")
pid = int(stream.readline())
for sig in (signal.SIGINT, signal.SIGTERM):
    signal.signal(sig, lambda s, f: os.kill(pid, s))
status = int(stream.readline() or -1)
if status < 0:  # killed by a signal: so is the client
    if -status not in (signal.SIGKILL, signal.SIGSTOP):
        signal.signal(-status, signal.SIG_DFL)
    os.kill(os.getpid(), -status)
sys.exit(status)
'''


def _recv_exactly(conn: socket.socket, n: int, first: bytes) -> bytes:
    data = first
    while len(data) < n:
        more = conn.recv(n - len(data))
        if not more:
            raise EOFError
        data += more
    return data


def _run_command(request: dict, fds: list[int], conn: socket.socket) -> None:
    """In the forked process: become the command, run it, report the status; never returns."""
    signal.signal(signal.SIGCHLD, signal.SIG_DFL)  # to wait for the command (the server's forks reap themselves)
    pid = os.fork()
    if pid == 0:
        conn.close()
        for target, fd in enumerate(fds):
            os.dup2(fd, target)
        for fd in fds:
            os.close(fd)
        # as a fresh interpreter has them: Ctrl-C raises KeyboardInterrupt, a closed pipe is an error, not a kill
        signal.signal(signal.SIGINT, signal.default_int_handler)
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        signal.signal(signal.SIGPIPE, signal.SIG_IGN)
        os.chdir(request["cwd"])
        os.environ.clear()
        os.environ.update(request["env"])
        sys.argv = ["dalle-data", *request["argv"]]
        code = 0
        try:
            from dalle_data.cli import main

            main()
        except SystemExit as exit_:
            code = exit_.code if isinstance(exit_.code, int) else (0 if exit_.code is None else 1)
        except BaseException:  # noqa: BLE001 - as the interpreter would: a traceback, status 1
            import traceback

            traceback.print_exc()
            code = 1
        try:
            sys.stdout.flush()
            sys.stderr.flush()
        finally:
            os._exit(code)
    for fd in fds:
        os.close(fd)
    conn.sendall(f"{pid}\n".encode())
    _, status = os.waitpid(pid, 0)
    code = os.waitstatus_to_exitcode(status)
    conn.sendall(f"{code}\n".encode())
    os._exit(0)


def serve(path: str) -> None:
    """The server: import once, then fork a command for each connection (until the socket is removed)."""
    import importlib

    for name in WARM_IMPORTS:
        importlib.import_module(name)
    sys.path[:] = [p for p in sys.path if p not in ("", ".")]  # a command's imports never come from its cwd
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)  # the per-command forks reap themselves
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(path + ".tmp")
    server.listen(16)
    os.rename(path + ".tmp", path)  # ready
    while True:
        conn, _ = server.accept()
        head, fds, _, _ = socket.recv_fds(conn, 1 << 16, 3)
        size = struct.unpack("!I", head[:4])[0]
        request = json.loads(_recv_exactly(conn, size + 4, head)[4:])
        if os.fork() == 0:
            server.close()
            _run_command(request, fds, conn)
        for fd in fds:
            os.close(fd)
        conn.close()


class WarmCli:
    """``with WarmCli(env) as warm:`` then run lines with ``warm.env`` (its client first on PATH)."""

    def __init__(self, env: dict[str, str]) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="warm-cli-"))
        self.socket = str(self.dir / "socket")
        bin_dir = self.dir / "bin"
        bin_dir.mkdir()
        client = bin_dir / "dalle-data"
        client.write_text(f"#!{sys.executable} -IS\n{CLIENT}")
        client.chmod(0o755)
        root = Path(__file__).resolve().parents[1]
        self.server = subprocess.Popen(
            [sys.executable, "-c", f"import sys; sys.path.insert(0, {str(root)!r}); import tests.warm_cli as w; "
                                   f"w.serve({self.socket!r})"],
            env=env, cwd=root, stdin=subprocess.DEVNULL)
        self.env = {**env, "DALLE_DATA_WARM_SOCKET": self.socket,
                    "PATH": f"{bin_dir}{os.pathsep}{env.get('PATH', '')}"}

    def __enter__(self) -> WarmCli:
        deadline = time.monotonic() + 300
        while not os.path.exists(self.socket):
            if self.server.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the warm dalle-data server did not start (exit {self.server.poll()})")
            time.sleep(0.05)
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.kill()
        self.server.wait()
        import shutil

        shutil.rmtree(self.dir, ignore_errors=True)


_SHARED: list[WarmCli] = []


def dalle_data_command(env: dict[str, str] | None = None) -> tuple[list[str], dict[str, str]]:
    """``[python, -m, dalle_data]`` as a warm command: the argv prefix and the environment to run it with.

    One server per test process, started at the first call with ``HF_HUB_OFFLINE=1`` (the tests that use
    this run offline) and stopped at exit. For ``subprocess.run``-style calls whose process is waited for;
    a test that needs the command's own pid (a lock holder's) starts it cold."""
    import atexit

    if not _SHARED:
        server = WarmCli({**os.environ, "HF_HUB_OFFLINE": "1"}).__enter__()
        atexit.register(server.__exit__)
        _SHARED.append(server)
    server = _SHARED[0]
    return [str(server.dir / "bin" / "dalle-data")], {**(env if env is not None else os.environ),
                                                      "DALLE_DATA_WARM_SOCKET": server.socket}


def warm_path_env(env: dict[str, str]) -> dict[str, str]:
    """``env`` with the shared warm ``dalle-data`` first on PATH: for scripts that call it by name."""
    command, env = dalle_data_command(env)
    return {**env, "PATH": f"{Path(command[0]).parent}{os.pathsep}{env.get('PATH', '')}"}
