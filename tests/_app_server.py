"""Runs `python -m apps.NAME ...` command lines for tests/test_apps.py's `run_app`, forked
from one process that has already imported TensorFlow and the library.

Every app run in a fresh interpreter spends about 6 CPU-seconds importing TensorFlow, more
than a bad-input case takes in all; here the import happens once per test worker and each
command line runs in a forked child, as `python -m` would run it: its own stdout and stderr
(files the caller reads), working directory, `sys.argv`, exit status (SystemExit's code,
1 and a traceback on an uncaught exception) and exit handlers. No TensorFlow op runs in
this process before a fork, so each child starts TensorFlow's runtime itself (threads,
devices, `--cpu_replicas`) as a new process does.

Protocol, one JSON line each way per command: {"argv": [...], "cwd": ..., "stdout": PATH,
"stderr": PATH} in, {"pid": PID} then {"status": CODE} out (the caller may kill PID on a
timeout). The first line out, once the imports are done, is {"ready": true}.
"""
import atexit
import json
import os
import runpy
import sys
import traceback

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import apps.common  # noqa: E402,F401  (imports keras_simclr and TensorFlow, sets the runtime)


def child(request):
    """Runs one command line in this (forked) process and exits with its status."""
    for fd, path in ((1, request["stdout"]), (2, request["stderr"])):
        os.dup2(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644), fd)
    os.chdir(request["cwd"])
    sys.argv = list(request["argv"])
    status = 0
    try:
        runpy.run_module(sys.argv[0], run_name="__main__", alter_sys=True)
    except SystemExit as stop:
        if stop.code is None or isinstance(stop.code, int):
            status = stop.code or 0
        else:
            print(stop.code, file=sys.stderr)
            status = 1
    except BaseException:  # noqa: BLE001  (as the interpreter reports it)
        traceback.print_exc()
        status = 1
    atexit._run_exitfuncs()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(status)


def serve(requests, replies):
    reply = lambda message: (replies.write(json.dumps(message) + "\n"), replies.flush())
    reply({"ready": True})
    for line in requests:
        request = json.loads(line)
        pid = os.fork()
        if pid == 0:
            requests.close()
            child(request)
        reply({"pid": pid})
        _, status = os.waitpid(pid, 0)
        reply({"status": os.waitstatus_to_exitcode(status)})


if __name__ == "__main__":
    # replies go to a duplicate of stdout: a child's output must not reach the pipe
    serve(sys.stdin, os.fdopen(os.dup(1), "w"))
