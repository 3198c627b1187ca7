"""`make demo` refuses a host whose kernel keeps rootless BuildKit from starting.

We test these aspects:
- `check_user_namespaces` (e2e/lib.sh) fails, naming the sysctl and the command that fixes it, when
  `user.max_user_namespaces` is 0 or when `kernel.apparmor_restrict_unprivileged_userns` is 1 (Ubuntu
  24.04's default), and reports both when both are in the way;
- it passes silently when user namespaces are allowed, and when a sysctl is not there to read (no
  AppArmor restriction in that kernel; not Linux);
- on a refusing host `make demo` stops before it runs docker, kind or kubectl: nothing is created.

The check runs under bash against a fake /proc/sys tree (`PROC_SYS_DIR`); stand-ins for docker, kind
and kubectl record any call.
"""

import os
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
MAX_USER_NAMESPACES = "user/max_user_namespaces"
APPARMOR_RESTRICTION = "kernel/apparmor_restrict_unprivileged_userns"

RESTRICTED = (
    "kernel.apparmor_restrict_unprivileged_userns=1",
    "sudo sysctl -w kernel.apparmor_restrict_unprivileged_userns=0",
    "allow `userns` to rootlesskit",
    "https://rootlesscontaine.rs/getting-started/common/apparmor/",
)
NO_USER_NAMESPACES = ("user.max_user_namespaces is 0", "sudo sysctl -w user.max_user_namespaces=")

HOSTS: dict[str, tuple[dict[str, str], int, tuple[str, ...]]] = {
    "user namespaces allowed": ({MAX_USER_NAMESPACES: "63414\n", APPARMOR_RESTRICTION: "0\n"}, 0, ()),
    "a kernel without the AppArmor restriction": ({MAX_USER_NAMESPACES: "63414\n"}, 0, ()),
    "no sysctls to read": ({}, 0, ()),
    "Ubuntu 24.04's default": ({MAX_USER_NAMESPACES: "63414\n", APPARMOR_RESTRICTION: "1\n"}, 1, RESTRICTED),
    "user namespaces switched off": (
        {MAX_USER_NAMESPACES: "0\n", APPARMOR_RESTRICTION: "0\n"},
        1,
        NO_USER_NAMESPACES,
    ),
    "both in the way": (
        {MAX_USER_NAMESPACES: "0\n", APPARMOR_RESTRICTION: "1\n"},
        1,
        NO_USER_NAMESPACES + RESTRICTED,
    ),
}


def fake_proc_sys(root: Path, sysctls: dict[str, str]) -> Path:
    for name, value in sysctls.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(value)
    return root


@pytest.mark.parametrize(("sysctls", "status", "quoted"), HOSTS.values(), ids=HOSTS.keys())
def test_the_host_check_names_what_to_change(
    tmp_path: Path, sysctls: dict[str, str], status: int, quoted: tuple[str, ...]
) -> None:
    proc_sys = fake_proc_sys(tmp_path, sysctls)
    result = subprocess.run(
        ["bash", "-c", "source e2e/lib.sh && check_user_namespaces"],
        cwd=ROOT,
        env={**os.environ, "PROC_SYS_DIR": str(proc_sys)},
        capture_output=True,
        text=True,
        check=False,
    )
    assert (result.returncode, result.stdout) == (status, "")
    for text in quoted:
        assert text in result.stderr
    if status == 0:
        assert result.stderr == ""


def test_make_demo_creates_nothing_on_a_refusing_host(tmp_path: Path) -> None:
    proc_sys = fake_proc_sys(
        tmp_path / "proc-sys", {MAX_USER_NAMESPACES: "63414\n", APPARMOR_RESTRICTION: "1\n"}
    )
    stand_ins, calls = tmp_path / "bin", tmp_path / "calls"
    stand_ins.mkdir()
    for tool in ("docker", "kind", "kubectl"):
        (stand_ins / tool).write_text(f'#!/bin/sh\necho "{tool} $*" >>"{calls}"\n')
        (stand_ins / tool).chmod(0o755)
    result = subprocess.run(
        ["bash", "e2e/demo.sh"],
        cwd=ROOT,
        env={
            **os.environ,
            "PROC_SYS_DIR": str(proc_sys),
            "PATH": f"{stand_ins}{os.pathsep}{os.environ['PATH']}",
        },
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 1
    assert "kernel.apparmor_restrict_unprivileged_userns=1" in result.stderr
    assert not calls.exists(), calls.read_text()
