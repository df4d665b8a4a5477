"""App and helper-script processes for the tests, forked from one process per test worker
that has already imported TensorFlow and the library.

Every app run in a fresh interpreter spends about 6 CPU-seconds importing TensorFlow, more
than a bad-input case takes in all. Run as a script, this file imports `apps.common` once
and forks a child per command line, which runs as `python -m apps.NAME ...` or `python
SCRIPT.py ...` would: its own stdout and stderr (files), environment, working directory,
`sys.argv`, exit status (SystemExit's code; 1 and a traceback on an uncaught exception),
exit handlers, signals. No TensorFlow op runs in the server, so each child starts
TensorFlow's runtime itself (threads, devices, `--cpu_replicas`, a cluster's TF_CONFIG) as
a new process does. Children run concurrently (two workers of a cluster test).

`start(argv, ...)` in a test returns a `Child`, a `subprocess.Popen` look-alike (pid, poll,
wait, communicate, send_signal, kill, returncode). Protocol, one JSON line per message:
requests {"id", "argv", "env", "cwd", "stdout", "stderr"}; replies {"ready"} once, then
{"id", "pid"} at each fork and {"id", "status"} when that child ends.
"""
import atexit
import itertools
import json
import os
import runpy
import select
import signal
import subprocess
import sys
import tempfile
import threading
import traceback

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_STARTUP_TIMEOUT = 300


# ----------------------------------------------------------------------------------------
# The server (this file run as a script)


def _run_child(request, close_fds):
    """Runs one command line in this forked process and exits with its status."""
    os.dup2(os.open(os.devnull, os.O_RDONLY), 0)
    for fd, path in ((1, request["stdout"]), (2, request["stderr"])):
        if fd == 2 and path == request["stdout"]:
            os.dup2(1, 2)  # one file for both, as stderr=subprocess.STDOUT
        else:
            os.dup2(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644), fd)
    for fd in close_fds:
        os.close(fd)
    os.environ.clear()
    os.environ.update(request["env"])
    os.chdir(request["cwd"])
    sys.argv = list(request["argv"])
    status = 0
    try:
        if sys.argv[0].endswith(".py"):
            sys.path[0] = os.path.dirname(os.path.abspath(sys.argv[0]))
            runpy.run_path(sys.argv[0], run_name="__main__")
        else:
            sys.path[0] = request["cwd"]
            runpy.run_module(sys.argv[0], run_name="__main__", alter_sys=True)
    except SystemExit as stop:
        if stop.code is None or isinstance(stop.code, int):
            status = stop.code or 0
        else:
            print(stop.code, file=sys.stderr)
            status = 1
    except BaseException:  # noqa: BLE001  (reported as the interpreter reports it)
        traceback.print_exc()
        status = 1
    atexit._run_exitfuncs()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(status)


def serve():
    replies = os.fdopen(os.dup(1), "w")  # a child's output must not reach the pipe
    os.dup2(2, 1)
    reply = lambda message: (replies.write(json.dumps(message) + "\n"), replies.flush())
    reply({"ready": True})
    children, pending = {}, b""
    while True:
        readable, _, _ = select.select([0], [], [], 0.02)
        if readable:
            data = os.read(0, 1 << 16)
            if not data:
                return  # the tests ended
            pending += data
            *lines, pending = pending.split(b"\n")
            for line in lines:
                request = json.loads(line)
                pid = os.fork()
                if pid == 0:
                    _run_child(request, [replies.fileno()])
                children[pid] = request["id"]
                reply({"id": request["id"], "pid": pid})
        while children:
            pid, status = os.waitpid(-1, os.WNOHANG)
            if pid == 0:
                break
            reply({"id": children.pop(pid), "status": os.waitstatus_to_exitcode(status)})


# ----------------------------------------------------------------------------------------
# The client (imported by the tests)


class Child:
    """One command line running in a child of the server, used as a `subprocess.Popen`."""

    def __init__(self, server, argv, env, cwd, stdout, stderr):
        self.args = argv
        self.returncode = None
        self._ended = threading.Event()
        self._paths = [stdout or server.output_path(), stderr or server.output_path()]
        self.pid = server.submit(self, {"argv": list(argv), "env": dict(env), "cwd": cwd,
                                        "stdout": self._paths[0], "stderr": self._paths[1]})

    def _end(self, status):
        self.returncode = status
        self._ended.set()

    def poll(self):
        return self.returncode

    def wait(self, timeout=None):
        if not self._ended.wait(timeout):
            raise subprocess.TimeoutExpired(self.args, timeout)
        return self.returncode

    def printed(self) -> str:
        """What the child has written to its stdout file so far ("" before it opened it)."""
        try:
            with open(self._paths[0]) as f:
                return f.read()
        except FileNotFoundError:
            return ""

    def communicate(self, timeout=None):
        """(stdout, stderr) once the child has ended."""
        self.wait(timeout)
        return tuple(open(path).read() for path in self._paths)

    def send_signal(self, signum):
        if self.returncode is None:
            os.kill(self.pid, signum)

    def kill(self):
        self.send_signal(signal.SIGKILL)


class AppServer:
    """The server process of this test worker, started on first use."""

    def __init__(self):
        self.directory = tempfile.mkdtemp(prefix="app_server_")
        self._lock = threading.Lock()
        self._ids = itertools.count()
        self._waiting, self._children = {}, {}
        with open(os.path.join(self.directory, "startup.log"), "w+") as startup:
            self.process = subprocess.Popen(
                [sys.executable, os.path.abspath(__file__)], cwd=ROOT, text=True,
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=startup)
            assert json.loads(self.process.stdout.readline()) == {"ready": True}
            startup.seek(0)
            # TensorFlow's import: the tests check it for console noise as an app's own
            self.startup_console = startup.read()
        atexit.register(self.process.kill)
        threading.Thread(target=self._read_replies, daemon=True).start()

    def output_path(self):
        return os.path.join(self.directory, f"output.{next(self._ids)}")

    def submit(self, child, request):
        """Starts `request` for `child`; its pid."""
        started = threading.Event()
        with self._lock:
            request["id"] = next(self._ids)
            self._waiting[request["id"]] = (started, child)
            self.process.stdin.write(json.dumps(request) + "\n")
            self.process.stdin.flush()
        if not started.wait(_STARTUP_TIMEOUT):
            raise RuntimeError(f"the app server did not start {request['argv']}")
        return self._children[request["id"]][0]

    def _read_replies(self):
        for line in self.process.stdout:
            reply = json.loads(line)
            if "pid" in reply:
                started, child = self._waiting.pop(reply["id"])
                self._children[reply["id"]] = (reply["pid"], child)
                started.set()
            else:
                self._children.pop(reply["id"])[1]._end(reply["status"])


_SERVER = []


def start(argv, env=None, cwd=ROOT, stdout=None, stderr=None) -> Child:
    """`argv` ("apps.NAME" or a script path first) as a `Child` of this worker's server;
    stdout/stderr are file paths (None: files that `communicate` reads)."""
    if not _SERVER:
        _SERVER.append(AppServer())
    return Child(_SERVER[0], argv, os.environ if env is None else env, cwd, stdout, stderr)


def startup_console() -> str:
    return _SERVER[0].startup_console if _SERVER else ""


if __name__ == "__main__":
    sys.path.insert(0, ROOT)
    import apps.common  # noqa: F401  (imports keras_simclr and TensorFlow, sets the runtime)

    serve()
