"""Real faults for the reliability tests: a save run in a fresh interpreter whose files may not
grow past a size limit (``resource.setrlimit(RLIMIT_FSIZE)``), as on a full disk or under a quota."""
import subprocess
import sys

LIMIT = """
import resource, signal, sys
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)          # a write past the limit fails with EFBIG
resource.setrlimit(resource.RLIMIT_FSIZE, ({limit}, {limit}))
"""


def save_under_size_limit(statement: str, limit: int, *, setup: str = "") -> subprocess.CompletedProcess:
    """Run ``setup`` (imports), then ``statement`` with files limited to ``limit`` bytes. When the
    statement raises, the child prints ``failed: <exception type> <message>`` and exits with 3."""
    script = (setup + LIMIT.format(limit=limit) + f"try:\n    {statement}\nexcept Exception as e:\n"
              "    print('failed:', type(e).__name__, e)\n    sys.exit(3)\n")
    return subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
