"""Stopping the subprocesses tests start (a registry, a git daemon, the operator), and telling whether one
still runs."""

import subprocess
from pathlib import Path


def stop_process(process: subprocess.Popen[bytes], timeout: float = 10) -> int | None:
    """Terminate `process` and wait up to `timeout` seconds for it, then kill it.

    Returns its exit code if it had already ended by itself, None if it was stopped here.
    """
    if process.poll() is not None:
        return process.returncode
    process.terminate()
    try:
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
    return None


def process_alive(pid: int) -> bool:
    """Whether the process runs (a zombie waiting to be reaped does not)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    return state != "Z"
