"""The suite's torch subprocesses, started from a fork server instead of a fresh interpreter.

Every `python -m gpu_train...` / `python -c SCRIPT` the suite runs in the torch environment used to
pay for `import torch` (2.5-3.5 s of CPU on the 2-core machines, 30-odd calls a suite). A server
process per pytest worker imports torch once and forks a child for each call; the child sets the
call's environment, working folder, argv and standard streams and runs the module or script as
`python` would (`runpy` for -m, exec for -c, SystemExit and uncaught exceptions turned into the
same exit status and stderr), then exits through the normal interpreter shutdown (atexit handlers
run). Forking after the import alone is safe: torch starts no threads until it computes, and the
OpenMP pool size (OMP_NUM_THREADS, read when torch loads) is the suite's one thread. A call the
server cannot reproduce (interpreter flags such as -W, another OMP_NUM_THREADS) runs as a fresh
process, as does everything when ELFVC_TORCH_SERVER=0.
"""

from __future__ import annotations

import atexit
import json
import os
import selectors
import signal
import subprocess
import tempfile
from typing import Optional

_SERVER = r"""
import json, os, sys
import torch  # noqa: F401 - the import every call shares


def child(req, requests, replies):
    # Runs in the forked child; everything it needs is local, as the script's own __main__
    # replaces the server's globals.
    import builtins, os, runpy, sys
    requests.close()
    replies.close()
    os.dup2(os.open(os.devnull, os.O_RDONLY), 0)
    for fd, path in ((1, req["stdout"]), (2, req["stderr"])):
        os.dup2(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), fd)
    os.chdir(req["cwd"])
    os.environ.clear()
    os.environ.update(req["env"])
    mode, target, rest = req["args"][0], req["args"][1], req["args"][2:]
    sys.argv = [target if mode == "-m" else "-c", *rest]
    if mode == "-m":
        runpy._run_module_as_main(target)  # what `python -m` runs
    else:
        main = sys.modules["__main__"].__dict__
        main.clear()
        main.update({"__name__": "__main__", "__builtins__": builtins})
        exec(compile(target, "<string>", "exec"), main)
    sys.exit(0)


requests = os.fdopen(0, "r")
replies = os.fdopen(os.dup(1), "w")
for line in requests:
    req = json.loads(line)
    pid = os.fork()
    if pid == 0:
        child(req, requests, replies)
    replies.write(json.dumps({"pid": pid}) + "\n")
    replies.flush()
    _, status = os.waitpid(pid, 0)
    replies.write(json.dumps({"returncode": os.waitstatus_to_exitcode(status)}) + "\n")
    replies.flush()
"""


class TorchServer:
    """One fork server (started on first use); `run` mirrors subprocess.run(capture_output=True,
    text=True) for `[python, "-m" | "-c", X, *args]`."""

    def __init__(self, python: str, env: dict):
        self.python, self.env = python, dict(env)
        self.proc: Optional[subprocess.Popen] = None

    def _start(self):
        self.proc = subprocess.Popen([self.python, "-c", _SERVER], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     text=True, env=self.env, bufsize=1)
        atexit.register(self.close)

    def close(self):
        if self.proc is not None and self.proc.poll() is None:
            self.proc.stdin.close()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        self.proc = None

    def _reply(self, deadline_s: float) -> Optional[dict]:
        selector = selectors.DefaultSelector()
        selector.register(self.proc.stdout, selectors.EVENT_READ)
        ready = selector.select(timeout=deadline_s)
        selector.close()
        if not ready:
            return None
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"the torch fork server ended (status {self.proc.poll()})")
        return json.loads(line)

    def run(self, args: list, cwd: str, env: dict, timeout: float) -> subprocess.CompletedProcess:
        if self.proc is None or self.proc.poll() is not None:
            self._start()
        with tempfile.TemporaryDirectory(prefix="torch_call_") as tmp:
            out, err = os.path.join(tmp, "stdout"), os.path.join(tmp, "stderr")
            request = {"args": list(args), "cwd": str(cwd), "env": env, "stdout": out, "stderr": err}
            self.proc.stdin.write(json.dumps(request) + "\n")
            self.proc.stdin.flush()
            pid = self._reply(60)["pid"]
            reply = self._reply(timeout)
            if reply is None:
                os.kill(pid, signal.SIGKILL)
                self.close()
                raise subprocess.TimeoutExpired([self.python, *args], timeout)

            def read(path):
                with open(path, encoding="utf-8", errors="replace") as f:
                    return f.read()

            return subprocess.CompletedProcess([self.python, *args], reply["returncode"], read(out), read(err))


_servers: dict = {}


def servable(args: list, env: dict, base_env: dict) -> bool:
    """Whether the server reproduces `python *args` under `env`: -m or -c first, and the OpenMP
    thread count the server loaded torch with."""
    if os.environ.get("ELFVC_TORCH_SERVER", "1") == "0":
        return False
    return len(args) >= 2 and args[0] in ("-m", "-c") and env.get("OMP_NUM_THREADS") == base_env.get("OMP_NUM_THREADS")


def run(python: str, args: list, cwd, env: dict, base_env: dict, timeout: float = 600) -> subprocess.CompletedProcess:
    """`python *args` in `cwd` under `env`: through the fork server where it can, else a fresh process."""
    if not servable(args, env, base_env):
        return subprocess.run([python, *args], cwd=cwd, capture_output=True, text=True, timeout=timeout, env=env)
    key = (python, json.dumps(sorted(base_env.items())))
    if key not in _servers:
        _servers[key] = TorchServer(python, {**os.environ, **base_env})
    return _servers[key].run(args, cwd, env, timeout)
