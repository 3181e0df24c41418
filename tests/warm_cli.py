"""A warm ``dalle-data`` for tests that run the command line as a user does, many times.

Each ``python -m dalle_data generate`` pays seconds of imports (torch, diffusers, open_clip) before it does
anything; the examples test runs some eighty command lines. ``WarmCli`` starts one server process that
imports all of that once and then, for each command, forks a fresh process from it: a real process with
its own pid, signals, working directory, environment and exit status, that starts where the imports end.

The command line still goes through bash as written (quotes, redirections, pipes): a small ``dalle-data``
client first on ``PATH`` hands its argv, working directory, environment and its stdin, stdout and stderr
(the file descriptors themselves, over a UNIX socket) to the server, forwards SIGINT and SIGTERM to the
forked process, and exits with its status; killing the client kills its command.

Where a forked command differs from a cold one, and what is done about it:

* the server starts no thread (checked), so forking it is safe; the command ends through the
  interpreter's own shutdown (threads joined, atexit handlers, stdio flushed, SIGINT on an uncaught
  KeyboardInterrupt), as a cold process ends;
* environment read at import time is the server's: it is started with the tests' own (``HF_HUB_OFFLINE=1``),
  and ``OMP_NUM_THREADS`` of the request is applied to torch; numpy's global generator is reseeded
  (Python's ``random`` is reseeded at fork by the interpreter);
* every command of one server shares its string-hash seed: a determinism test compares a warm run with a
  *cold* reference (``run_cli(..., warm=False)``), so a set-order bug still shows;
* modules the command would not import itself (the server imports the heavy ones of ``generate``) are
  already loaded: ``tests/unit/test_layers.py`` checks each command's imports in a fresh interpreter.
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
pid, pending = None, []
def forward(sig, frame):
    if pid is None:
        pending.append(sig)  # before the command has a pid: delivered as soon as it has one
        return
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        pass  # it has just ended: its status is on its way
for sig in (signal.SIGINT, signal.SIGTERM):
    signal.signal(sig, forward)
sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
sock.connect(os.environ["DALLE_DATA_WARM_SOCKET"])
message = json.dumps({"argv": sys.argv[1:], "cwd": os.getcwd(), "env": dict(os.environ)}).encode()
data = struct.pack("!I", len(message)) + message
sent = socket.send_fds(sock, [data], [0, 1, 2])
sock.sendall(data[sent:])
stream = sock.makefile("rb")
def read():
    line = stream.readline()
    if not line:
        sys.stderr.write("warm dalle-data: the server went away\\n")
        sys.exit(255)
    return int(line)
pid = read()
for sig in pending:
    forward(sig, None)
status = read()
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


def _become_command(request: dict, fds: list[int]) -> None:
    # In the command's process: its stdio, signals, cwd, environment and argv, then the command. Whatever it
    # raises or exits with leaves through the interpreter's own shutdown (non-daemon threads joined, atexit
    # handlers run, stdio flushed; an uncaught KeyboardInterrupt ends it by SIGINT), as a cold process ends.
    for target, fd in enumerate(fds):
        os.dup2(fd, target)
    for fd in fds:
        os.close(fd)
    # as a fresh interpreter has them: Ctrl-C raises KeyboardInterrupt, a closed pipe is an error, not a kill
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGPIPE, signal.SIG_IGN)
    signal.signal(signal.SIGCHLD, signal.SIG_DFL)
    os.chdir(request["cwd"])
    os.environ.clear()
    os.environ.update(request["env"])
    sys.argv = ["dalle-data", *request["argv"]]
    if "numpy" in sys.modules:
        sys.modules["numpy"].random.seed()  # a fresh process draws its own (Python's random is reseeded at fork)
    threads = os.environ.get("OMP_NUM_THREADS", "")
    if threads.isdigit() and int(threads) > 0:
        sys.modules["torch"].set_num_threads(int(threads))  # read at import by a cold one; the server's may differ
    from dalle_data.cli import main

    main()
    sys.exit(0)


def _watch(pid: int, fds: list[int], conn: socket.socket) -> None:
    # The middle process: tell the client the command's pid, wait for the command, report its status. A client
    # killed (a test's timeout, proc.kill()) takes its command with it, as killing a cold process would.
    import select

    for fd in fds:
        os.close(fd)
    try:
        conn.sendall(f"{pid}\n".encode())
        pidfd = os.pidfd_open(pid)
        while pidfd not in select.select([conn, pidfd], [], [])[0]:
            if not conn.recv(1):
                os.kill(pid, signal.SIGKILL)
                break
        _, status = os.waitpid(pid, 0)
        conn.sendall(f"{os.waitstatus_to_exitcode(status)}\n".encode())
    except OSError:
        pass  # the client is gone


def _run_command(request: dict, fds: list[int], conn: socket.socket) -> None:
    signal.signal(signal.SIGCHLD, signal.SIG_DFL)  # to wait for the command (the server's forks reap themselves)
    pid = os.fork()
    if pid == 0:
        conn.close()
        _become_command(request, fds)  # raises SystemExit (or what the command raised): never returns
    try:
        _watch(pid, fds, conn)
    finally:
        os._exit(0)


def serve(path: str) -> None:
    # The server: import once, then fork a command for each connection, until it is killed.
    import importlib
    import threading

    for name in WARM_IMPORTS:
        importlib.import_module(name)
    if threading.active_count() != 1:
        raise RuntimeError(f"an import started a thread ({threading.enumerate()}): forking would be unsafe")
    sys.path[:] = [p for p in sys.path if p not in ("", ".")]  # a command's imports never come from its cwd
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)  # the per-command forks reap themselves
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(path + ".tmp")
    server.listen(16)
    os.rename(path + ".tmp", path)  # ready
    while True:
        conn, _ = server.accept()
        fds: list[int] = []
        try:
            head, fds, _, _ = socket.recv_fds(conn, 1 << 16, 3)
            size = struct.unpack("!I", head[:4])[0]
            request = json.loads(_recv_exactly(conn, size + 4, head)[4:])
            if len(fds) != 3:
                raise ValueError("a request passes stdin, stdout and stderr")
        except (OSError, EOFError, ValueError, struct.error):  # a client that died or spoke nonsense: not fatal
            for fd in fds:
                os.close(fd)
            conn.close()
            continue
        if os.fork() == 0:  # outside the try: what the command raises is the command's
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
                code = self.server.poll()
                self.__exit__()
                raise RuntimeError(f"the warm dalle-data server did not start (exit {code})")
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

    if _SHARED and _SHARED[0].server.poll() is not None:
        _SHARED.pop()  # it died: start another
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
