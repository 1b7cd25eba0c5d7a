"""What runs inside the grader's sandbox (scripts/sandbox.py): one submission's exercises, each in a
process of its own, returning plain data on standard output. Nothing here decides a grade.

The job folder (``/job``, read-only) holds ``job.json``, written by scripts/grade.py:

    {"imports": "<the lab's import cell>",
     "cells": [["<grade id>", "<the student's source>"], ...],               # the exercise cells, in order
     "parts": [{"id": "<check id>", "key": "lab2 (b)", "function": "keep_mask", "own": 2,
                "cells": [0, 2], "timeout": 30}, ...],    # own: its exercise cell; cells: what it runs, in order
     "limits": {"memory": ..., "cpu_seconds": ..., "processes": ..., "file_size": ...}}

and ``lib/labkit``, a copy of labkit in which the graded references raise. For every part a child
process is forked: its standard streams go to /dev/null, the limits are set (soft and hard), the
part's cells run (from the namespace of the lab's import cell, run once before), then ``labkit.exercises.observe`` calls the student's function
on the visible and the hidden inputs. The child sends the two encoded observations back through a
pipe; this process writes, per part, one line of JSON ``{"id", "status", "message", "sizes"}`` and the
observations' bytes to its standard output, kills whatever the part left running, and goes on. A part
that hangs is killed at its ``timeout``; one that dies or exits costs that part only.
"""
import ctypes
import json
import os
import resource
import select
import signal
import sys
import time

OBSERVATION = 8 << 20                  # bytes of one part's observations, at most


class _Shell:
    """What a cell's magics call here: %time, %timeit and %%capture run their code, others nothing."""

    def __init__(self, ns, transform):
        self.ns, self.transform = ns, transform

    def run_line_magic(self, name, line, *args, **kwargs):
        if name in ("time", "timeit"):
            exec(compile(self.transform(line), "<magic>", "exec"), self.ns)

    def run_cell_magic(self, name, line, cell, *args, **kwargs):
        if name in ("time", "timeit", "capture"):
            exec(compile(self.transform(cell), "<magic>", "exec"), self.ns)

    def system(self, *args, **kwargs):
        pass

    def getoutput(self, *args, **kwargs):
        return []


def _limit(limits: dict) -> None:
    for name, key in (("RLIMIT_AS", "memory"), ("RLIMIT_CPU", "cpu_seconds"), ("RLIMIT_NPROC", "processes"),
                      ("RLIMIT_FSIZE", "file_size")):
        value = int(limits[key])
        resource.setrlimit(getattr(resource, name), (value, value))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))


def _child(job: dict, part: dict, write_fd: int, transform, ns: dict) -> None:
    """Run one part in this (forked) process and send ``status line + observations`` to ``write_fd``."""
    devnull = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(devnull, fd)
    sys.stdout = open(os.devnull, "w")
    sys.stderr = open(os.devnull, "w")
    send = os.fdopen(write_fd, "wb")

    def answer(status, message="", blobs=()):
        head = json.dumps({"status": status, "message": message[:1000], "sizes": [len(b) for b in blobs]})
        send.write(head.encode() + b"\n" + b"".join(blobs))
        send.flush()
        os._exit(0)

    try:
        _limit(job["limits"])
        os.environ["LABKIT_GRADING"] = part["key"]          # the part the stubs name
        from labkit import exercises
        if "__imports_failed__" in ns:
            answer("error", ns["__imports_failed__"])
        ns["get_ipython"] = lambda: _Shell(ns, transform)
        run = lambda src, name: exec(compile(transform(src), name, "exec"), ns)
        cells, failed = job["cells"], None
        for index in part["cells"]:
            name, src = cells[index]
            try:
                run(src, f"<your {name}>")
            except BaseException as e:                     # noqa: BLE001 - the student's code
                if index == part["own"]:
                    failed = f"{type(e).__name__}: {e}"
        fn = ns.get(part["function"])
        if not callable(fn):                               # a cell that raised after its def still counts
            answer("error", f"your exercise cell raised {failed}" if failed else
                   f"your exercise cell defines no {part['function']} (keep the function's name)")
        visible = exercises.encode(exercises.observe(part["key"], fn))
        hidden = exercises.encode(exercises.observe(part["key"], fn, hidden=True))
        answer("ok", "", (visible, hidden))
    except SystemExit:
        answer("error", "your code called exit() while this part was graded")
    except BaseException as e:                             # noqa: BLE001
        answer("error", f"{type(e).__name__}: {e}")


def _strays(me: int) -> None:
    """Kill every process of the sandbox but its init (pid 1) and this one: what a part left running."""
    for entry in os.listdir("/proc"):
        if entry.isdigit() and int(entry) not in (1, me):
            try:
                os.kill(int(entry), signal.SIGKILL)
            except OSError:
                pass


def _collect(pid: int, fd: int, timeout: float) -> tuple[str, bytes]:
    """Read the child's answer until it closes its pipe, its time is up or it sends too much."""
    data, deadline = bytearray(), time.monotonic() + timeout
    status = None
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            status = "timeout"
            break
        ready, _, _ = select.select([fd], [], [], min(left, 0.5))
        if ready:
            chunk = os.read(fd, 1 << 16)
            if not chunk:
                break
            data += chunk
            if len(data) > OBSERVATION:
                status = "too much output"
                break
    if status:
        try:
            os.kill(pid, signal.SIGKILL)
        except OSError:
            pass
    _, wstatus = os.waitpid(pid, 0)
    if status is None and not data:
        if os.WIFSIGNALED(wstatus):
            sig = os.WTERMSIG(wstatus)
            status = f"died of {signal.Signals(sig).name}" + (" (its CPU time limit)" if sig == signal.SIGXCPU else "")
        else:
            status = f"exited with status {os.WEXITSTATUS(wstatus)} before it answered"
    return status or "answered", bytes(data)


def main() -> int:
    folder = os.environ.get("LABKIT_JOB", "/job")
    with open(os.path.join(folder, "job.json"), encoding="utf-8") as f:
        job = json.load(f)
    # import once here, so every part's child has it (and starts in milliseconds)
    import numpy  # noqa: F401
    import torch
    from IPython.core.inputtransformer2 import TransformerManager
    from labkit import exercises  # noqa: F401
    torch.set_num_threads(1)
    transform = TransformerManager().transform_cell
    if os.environ.get("LABKIT_SANDBOX"):
        # no process of this user may read this one's memory or descriptors (/proc/<pid>/fd, ptrace)
        ctypes.CDLL(None).prctl(4, 0, 0, 0, 0)            # PR_SET_DUMPABLE, 0
    # the lab's import cell (the course's code, not the student's) runs once, here: every part's child
    # starts from a copy of its namespace
    ns = {"__name__": "__main__"}
    out = sys.stdout.buffer
    sys.stdout = sys.stderr = open(os.devnull, "w")
    try:
        exec(compile(transform(job["imports"]), "<imports>", "exec"), ns)
    except BaseException as e:                             # noqa: BLE001 - reported by every part
        ns["__imports_failed__"] = f"the lab's import cell failed in the sandbox: {type(e).__name__}: {e}"
    me = os.getpid()
    for part in job["parts"]:
        read_fd, write_fd = os.pipe()
        pid = os.fork()
        if pid == 0:
            os.close(read_fd)
            _child(job, part, write_fd, transform, ns)
            os._exit(0)
        os.close(write_fd)
        status, data = _collect(pid, read_fd, float(part["timeout"]))
        os.close(read_fd)
        if os.environ.get("LABKIT_SANDBOX"):
            _strays(me)
        if status == "answered":
            head, _, body = data.partition(b"\n")
            try:
                answer = json.loads(head)
                sizes = [int(n) for n in answer["sizes"]]
                assert sum(sizes) == len(body) and all(n >= 0 for n in sizes)
                status, message = str(answer["status"]), str(answer["message"])
            except Exception:                               # noqa: BLE001
                status, message, sizes, body = "error", "the part's answer could not be read", [], b""
        else:
            message, sizes, body = status, [], b""
            status = "error"
        line = json.dumps({"id": part["id"], "status": status, "message": message, "sizes": sizes})
        out.write(line.encode() + b"\n" + body)
        out.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
