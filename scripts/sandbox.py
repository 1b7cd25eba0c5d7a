"""The OS sandbox the grader runs students' code in: bubblewrap (``bwrap``), unprivileged Linux
namespaces, no daemon and no image to build.

The sandboxed process sees a read-only view of the system (``/usr``, ``/etc``), of the Python that
runs the grader (its installation and site-packages) and of one job folder (``/job``: the runner, one
submission's cells, the copy of labkit whose graded references raise); a private, empty, size-limited
home and ``/tmp``; nothing else of the instructor's files (the checkout, the solved notebooks, the
other submissions, the grades). It has no network (an empty network namespace of its own), its own
PID namespace (everything it starts dies with it), the unprivileged uid 65534, and limits on memory,
CPU time, processes and file size (``Limits``; the runner sets them on every process that runs a
student's code) besides the wall-clock limit here. What comes back is its standard output, read up to
``Limits.output`` bytes: plain data the grader parses and judges, never code.

    reason = why_unavailable()        # None where a sandbox can be made
    result = run(job_folder, ["python", "/job/runner.py"], timeout=120)
"""
from __future__ import annotations

import os
import resource
import selectors
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

UID = 65534                     # "nobody": the sandbox's user and group
JOB = "/job"                    # where the job folder appears inside
HOME = "/home/student"          # the private home (tmpfs)
SYSTEM = ("/usr", "/etc")      # bound read-only; /bin, /lib... follow as links or binds


@dataclass(frozen=True)
class Limits:
    """What one sandbox may use. ``memory``, ``cpu_seconds``, ``processes`` and ``file_size`` are set
    (soft and hard) on every process that runs a student's code; the others hold the sandbox as a whole."""
    memory: int = 5 << 29          # bytes of address space per process (RLIMIT_AS, 2.5 GiB); torch maps ~0.7 GiB
    cpu_seconds: int = 60          # CPU seconds per process (RLIMIT_CPU)
    processes: int = 8             # processes and threads of the sandbox's user (RLIMIT_NPROC): so at most
                                   # 8 x 2.5 GiB of memory in all (the runner and a part need 2)
    file_size: int = 16 << 20      # bytes per file written (RLIMIT_FSIZE)
    disk: int = 64 << 20           # bytes of the private /tmp and of the home (tmpfs size, each)
    output: int = 32 << 20         # bytes of standard output read back; more is cut and reported


@dataclass
class Result:
    stdout: bytes
    returncode: int | None         # None: killed here (timed out or too much output)
    stderr: str                    # its last 2000 characters, for the instructor's diagnosis
    timed_out: bool = False
    truncated: bool = False


def _binds() -> list[str]:
    """bwrap's arguments for the read-only system and Python: every directory the interpreter needs,
    never the checkout itself (only its virtual environment, when it lives there)."""
    args: list[str] = []
    for path in SYSTEM:
        if os.path.isdir(path):
            args += ["--ro-bind", path, path]
    for name in ("bin", "sbin", "lib", "lib32", "lib64", "libx32"):
        path = f"/{name}"
        if os.path.islink(path):
            args += ["--symlink", os.readlink(path), path]
        elif os.path.isdir(path):
            args += ["--ro-bind", path, path]
    python = {Path(sys.prefix).resolve(), Path(sys.base_prefix).resolve(),
              Path(os.path.realpath(sys.executable)).parent.parent, Path(sys.prefix)}
    made: set[Path] = set()
    for path in sorted(python):
        if not any(str(path).startswith(s + "/") or str(path) == s for s in SYSTEM):
            for parent in reversed(path.parents[:-1]):        # folders above it, readable (bwrap makes them 0700)
                if parent not in made:
                    made.add(parent)
                    args += ["--perms", "0755", "--dir", str(parent)]
            args += ["--ro-bind", str(path), str(path)]
    for entry in sys.path:                                    # an installed (not editable) labkit is hidden
        if entry and os.path.isdir(os.path.join(entry, "labkit")) and "site-packages" in entry:
            args += ["--tmpfs", os.path.join(entry, "labkit")]
    return args


def command(job: Path, argv: list[str], limits: Limits = Limits(), lib: Path | None = None,
            uid: int = UID) -> list[str]:
    """The bwrap command line that runs ``argv`` in the sandbox with ``job`` at /job and ``lib`` (the
    Python packages the job may import, first on its path) at /job/lib. As root, the sandbox runs as
    the real ``uid`` (give each sandbox running at once its own, so that their process limits, which
    count a user's processes, are their own); otherwise as 65534 in a user namespace of its own."""
    bwrap = shutil.which("bwrap")
    if bwrap is None:
        raise RuntimeError(why_unavailable() or "bwrap not found")
    if os.geteuid() == 0:
        # As root, bwrap makes no user namespace: the sandbox starts as root with every mount in place,
        # and setpriv drops to the real uid 65534 with no capabilities and no way back before anything
        # else runs. (Root's processes are exempt from RLIMIT_NPROC, nobody's are not.)
        users = ["--unshare-ipc", "--unshare-pid", "--unshare-net", "--unshare-uts", "--unshare-cgroup-try"]
        drop = [shutil.which("setpriv") or "/usr/bin/setpriv", "--reuid", str(uid), "--regid", str(uid),
                "--clear-groups", "--no-new-privs", "--inh-caps=-all", "--bounding-set=-all"]
    else:
        users = ["--unshare-all", "--uid", str(UID), "--gid", str(UID)]
        drop = []
    # the private /tmp and home first: a Python that lives under /tmp (a checkout there) is bound over them
    return [bwrap, *users, "--die-with-parent", "--new-session", "--hostname", "sandbox",
            "--proc", "/proc", "--dev", "/dev",
            "--perms", "1777", "--size", str(limits.disk), "--tmpfs", "/tmp",
            "--perms", "1777", "--size", str(limits.disk), "--tmpfs", HOME,
            *_binds(),
            "--ro-bind", str(Path(job).resolve()), JOB,
            *(["--ro-bind", str(Path(lib).resolve()), f"{JOB}/lib"] if lib else []),
            "--chdir", HOME, "--clearenv",
            "--setenv", "HOME", HOME, "--setenv", "TMPDIR", "/tmp",
            "--setenv", "PATH", f"{Path(sys.executable).parent}:/usr/bin:/bin",
            "--setenv", "PYTHONPATH", f"{JOB}/lib", "--setenv", "PYTHONDONTWRITEBYTECODE", "1",
            "--setenv", "PYTHONHASHSEED", "0", "--setenv", "MPLBACKEND", "Agg",
            "--setenv", "OMP_NUM_THREADS", "1", "--setenv", "MKL_NUM_THREADS", "1",
            "--setenv", "LABKIT_PROGRESS", "off", "--setenv", "LABKIT_SANDBOX", "1",
            "--", *drop, *argv]


def _kill(proc: subprocess.Popen) -> None:
    """Kill the sandbox: bwrap and its session (its PID namespace then dies with it)."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    proc.kill()


def run(job: Path, argv: list[str], *, timeout: float, limits: Limits = Limits(), lib: Path | None = None,
        sandboxed: bool = True, idle: float | None = None, uid: int = UID) -> Result:
    """Run ``argv`` in a sandbox over ``job`` (and ``lib``, see `command`); read its standard output up to ``limits.output`` bytes,
    kill it all after ``timeout`` seconds, or once it has written nothing for ``idle`` seconds (a
    stopped or stalled process: it cannot make the grader wait out the whole ``timeout``). ``sandboxed=False`` (the instructor's explicit trust) runs
    the same command as a plain child process with the same environment, and no isolation at all."""
    if sandboxed:
        cmd = command(job, argv, limits, lib, uid)
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin")}
    else:
        cmd = [a.replace(JOB, str(Path(job).resolve())) for a in argv]
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(job),
               "PYTHONPATH": str(Path(lib).resolve()) if lib else "",
               "PYTHONDONTWRITEBYTECODE": "1", "MPLBACKEND": "Agg", "OMP_NUM_THREADS": "1",
               "LABKIT_PROGRESS": "off", "LABKIT_JOB": str(Path(job).resolve())}
    proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            env=env, start_new_session=True, cwd=str(job),
                            preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_CORE, (0, 0)))
    out, err = bytearray(), bytearray()
    timed_out = truncated = False
    deadline = time.monotonic() + timeout
    quiet_until = time.monotonic() + (idle if idle else timeout)
    with selectors.DefaultSelector() as sel:
        sel.register(proc.stdout, selectors.EVENT_READ, out)
        sel.register(proc.stderr, selectors.EVENT_READ, err)
        while sel.get_map():
            left = min(deadline, quiet_until) - time.monotonic()
            if left <= 0:
                timed_out = True
                break
            for key, _ in sel.select(timeout=min(left, 1.0)):
                chunk = os.read(key.fileobj.fileno(), 1 << 16)
                if not chunk:
                    sel.unregister(key.fileobj)
                    continue
                key.data.extend(chunk)
                if key.data is out and idle:
                    quiet_until = time.monotonic() + idle
                if len(err) > 1 << 16:
                    del err[:-4000]
            if len(out) > limits.output:
                truncated = True
                del out[limits.output:]
                break
    if timed_out or truncated:
        _kill(proc)
    try:
        code = proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        _kill(proc)
        code = proc.wait()
    proc.stdout.close()
    proc.stderr.close()
    return Result(bytes(out), None if (timed_out or truncated) else code,
                  err.decode("utf-8", "replace")[-2000:], timed_out, truncated)


_REASON: dict[str, str | None] = {}


def why_unavailable() -> str | None:
    """None when a sandbox can be made here; else why not, in words an instructor can act on."""
    if "reason" in _REASON:
        return _REASON["reason"]
    reason = None
    if not sys.platform.startswith("linux"):
        reason = f"the sandbox needs Linux namespaces (bubblewrap); this is {sys.platform}"
    elif shutil.which("bwrap") is None:
        reason = ("bubblewrap is not installed (Debian/Ubuntu: `sudo apt-get install bubblewrap`; "
                  "Fedora: `sudo dnf install bubblewrap`)")
    elif os.geteuid() == 0 and shutil.which("setpriv") is None:
        reason = "the grader runs as root and setpriv (util-linux) is missing: it drops the sandbox to uid 65534"
    else:
        import tempfile
        with tempfile.TemporaryDirectory() as tmp:
            probe = subprocess.run(command(Path(tmp), ["/bin/sh", "-c", "exit 0"]), capture_output=True,
                                   text=True, timeout=60)
        if probe.returncode != 0:
            reason = (f"bubblewrap cannot make a sandbox here ({probe.stderr.strip()[:300]}); unprivileged user "
                      f"namespaces may be disabled (sysctl kernel.unprivileged_userns_clone=1, or "
                      f"user.max_user_namespaces > 0)")
    _REASON["reason"] = reason
    return reason
