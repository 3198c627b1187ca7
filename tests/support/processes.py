"""Stopping the subprocesses tests start: a registry, a git daemon, the operator."""

import subprocess


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
