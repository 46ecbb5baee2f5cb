#!/usr/bin/env python
"""A warm Python for the C++ tests' reference checks (tests/pyserver.h is the client).

Most of a reference check's time is starting Python and importing torch, transformers and
peft (5-10 s on a loaded 2-core machine), not the check. This server imports them once,
then runs each request in a fresh fork: the child sets sys.argv, runs the script as
__main__ (runpy), and its exit status and output (stdout and stderr together) go back to
the client. A fork starts from the same imported-but-unused state every time, so a script
sees what a new interpreter would, less the import time. The parent never runs a torch
op: forking after OpenMP threads exist is unsafe.

Usage: pyserver.py SOCKET OWNER_PID
Binds the Unix socket (the client made its directory and holds a lock while starting
us), prints "ready" to stdout and closes it, then serves until OWNER_PID (the test
runner) is gone or nobody has asked for IDLE_S seconds.

Request: one JSON line {"argv": [script, args...], "cwd": dir, "env": {name: value}}; script
"-c" runs the next argument as code. Reply: one JSON line {"status": exit_code, "output": text}.
"""
import json
import os
import runpy
import select
import signal
import socket
import sys
import tempfile
import traceback

IDLE_S = 300

# The reference stack every check script imports; loading it here is the point.
import numpy  # noqa: F401,E402
import safetensors.torch  # noqa: F401,E402
import torch  # noqa: F401,E402
import transformers  # noqa: F401,E402
import peft  # noqa: F401,E402


def owner_alive(pid):
    try:
        os.kill(pid, 0)
        return True
    except ProcessLookupError:
        return False
    except PermissionError:
        return True


def run_script(argv, cwd, env, out_fd):
    """In the grandchild: runs argv as `python argv...` would, output to out_fd; never returns."""
    if env is not None:  # the client's environment (variables read at import time stay the server's)
        os.environ.clear()
        os.environ.update(env)
    os.dup2(out_fd, 1)
    os.dup2(out_fd, 2)
    sys.stdout = os.fdopen(1, "w", buffering=1, closefd=False)
    sys.stderr = os.fdopen(2, "w", buffering=1, closefd=False)
    code = 0
    try:
        os.chdir(cwd)
        if argv[0] == "-c":
            sys.argv = ["-c"] + argv[2:]
            exec(compile(argv[1], "<string>", "exec"), {"__name__": "__main__"})
        else:
            sys.argv = list(argv)
            sys.path.insert(0, os.path.dirname(os.path.abspath(argv[0])))
            runpy.run_path(argv[0], run_name="__main__")
    except SystemExit as e:
        if e.code is None:
            code = 0
        elif isinstance(e.code, int):
            code = e.code
        else:
            print(e.code, file=sys.stderr)
            code = 1
    except BaseException:  # noqa: BLE001 - report like the interpreter would
        traceback.print_exc()
        code = 1
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code & 0xFF)


def handle(conn):
    """In the handler child: reads one request, runs it in a grandchild, replies."""
    data = b""
    while not data.endswith(b"\n"):
        chunk = conn.recv(65536)
        if not chunk:
            os._exit(0)
        data += chunk
    req = json.loads(data)
    with tempfile.TemporaryFile() as out:
        pid = os.fork()
        if pid == 0:
            conn.close()
            run_script(req["argv"], req.get("cwd", "/"), req.get("env"), out.fileno())
        _, status = os.waitpid(pid, 0)
        code = os.waitstatus_to_exitcode(status)
        if code < 0:
            code = 128 - code  # killed by a signal, as a shell reports it
        out.seek(0)
        text = out.read().decode("utf-8", "replace")
    conn.sendall((json.dumps({"status": code, "output": text}) + "\n").encode())
    conn.close()
    os._exit(0)


def main():
    path, owner = sys.argv[1], int(sys.argv[2])
    os.setsid()  # the test that started us may be killed with its process group; we stay
    if os.path.exists(path):
        os.unlink(path)  # a stale socket from a server that is gone (the client holds the lock)
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(path)
    server.listen(16)
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)  # handler children reap themselves
    print("ready", flush=True)
    os.close(1)
    os.open(os.devnull, os.O_WRONLY)  # takes fd 1 again, so nothing writes into a closed pipe
    idle = 0.0
    try:
        while owner_alive(owner) and idle < IDLE_S:
            ready, _, _ = select.select([server], [], [], 1.0)
            if not ready:
                idle += 1.0
                continue
            idle = 0.0
            conn, _ = server.accept()
            if os.fork() == 0:
                server.close()
                signal.signal(signal.SIGCHLD, signal.SIG_DFL)  # the handler waits for its script
                handle(conn)
            conn.close()
    finally:
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass


if __name__ == "__main__":
    main()
