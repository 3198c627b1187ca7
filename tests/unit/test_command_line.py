"""We test these aspects of the command line (`python -m servicebuild`, `servicebuild-operator`):

- `--help` lists every setting from the model: its variable, its default and its docstring;
- defaults read as they would be written in the environment (`false`, `60`, `empty`, `unset`);
- a bad setting is one line naming the variable, its value, what is wrong and what the setting takes;
  several bad settings give one line each; a JSON value that does not decode is such a line too;
- unknown arguments exit 2, as argparse does;
- as a process: `--help` and a bad setting exit before anything loads a kubeconfig, without a traceback.
- the settings table of docs/settings.md names the same variables as the model.
"""

import json
import os
import re
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path

import pytest
from pydantic import ValidationError
from pydantic_settings import SettingsError

from servicebuild import command_line
from servicebuild.config import Settings

PUSH_REGISTRIES_TAKES = "Per namespace, the registry hosts its builds may push images and caches to, as JSON"


@pytest.fixture(autouse=True)
def no_settings_in_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in [name for name in os.environ if name.upper().startswith("SERVICEBUILD_")]:
        monkeypatch.delenv(name)


def lines_for(monkeypatch: pytest.MonkeyPatch, environ: Mapping[str, str]) -> list[str]:
    """What a user sees for these variables: Settings() as the operator calls it, then the formatting."""
    for name, value in environ.items():
        monkeypatch.setenv(name, value)
    with pytest.raises((ValidationError, SettingsError)) as raised:
        Settings()
    assert isinstance(raised.value, ValidationError | SettingsError)
    return command_line.setting_error_lines(raised.value, os.environ)


# --help


@pytest.mark.parametrize("field", list(Settings.model_fields))
def test_help_lists_every_setting_with_its_default_and_docstring(field: str) -> None:
    text = command_line.parser().format_help()
    info = Settings.model_fields[field]
    default = command_line.env_default(info.get_default(call_default_factory=True))
    assert f"  {command_line.env_name(field)}  (default: {default})\n" in text
    assert info.description, f"{field}: give the field a docstring; it is the help text"
    assert " ".join(info.description.split()) in " ".join(text.split())


def test_help_names_the_variables_as_pydantic_settings_reads_them(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(command_line.env_name("max_running_builds_per_namespace"), "7")
    assert (
        command_line.env_name("max_running_builds_per_namespace")
        == "SERVICEBUILD_MAX_RUNNING_BUILDS_PER_NAMESPACE"
    )
    assert Settings().max_running_builds_per_namespace == 7


@pytest.mark.parametrize(
    ("default", "shown"),
    [
        (None, "unset"),
        (False, "false"),
        (True, "true"),
        (60.0, "60"),
        (0.5, "0.5"),
        (3600, "3600"),
        (frozenset(), "empty"),
        (frozenset({"registry:5000", "localhost:5001"}), "localhost:5001,registry:5000"),
        ({}, "empty"),
        ({"shop": frozenset({"b", "a"})}, json.dumps({"shop": ["a", "b"]})),
        ("moby/buildkit:v0.32.2-rootless", "moby/buildkit:v0.32.2-rootless"),
    ],
)
def test_defaults_read_as_environment_values(default: object, shown: str) -> None:
    assert command_line.env_default(default) == shown


def test_help_exits_0_and_unknown_arguments_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as helped:
        command_line.settings_from_command_line(["--help"])
    assert helped.value.code == 0
    assert "SERVICEBUILD_WORKERS" in capsys.readouterr().out

    with pytest.raises(SystemExit) as refused:
        command_line.settings_from_command_line(["--namespace", "shop"])
    assert refused.value.code == 2
    assert "unrecognized arguments: --namespace shop" in capsys.readouterr().err


# A bad setting: one line


@pytest.mark.parametrize(
    ("variable", "problem", "description", "line"),
    [
        (
            "SERVICEBUILD_WORKERS",
            "Input should be x",
            "Threads.",
            "SERVICEBUILD_WORKERS: Input should be x — Threads.",
        ),
        ("SERVICEBUILD_WORKERS", "bad", None, "SERVICEBUILD_WORKERS: bad"),
        ("SERVICEBUILD_X", "a\n  b", "one\n    two", "SERVICEBUILD_X: a b — one two"),
    ],
)
def test_error_line_without_a_value(variable: str, problem: str, description: str | None, line: str) -> None:
    assert command_line.setting_error_line(variable, None, problem, description) == line


def test_error_line_quotes_the_value_on_the_same_line() -> None:
    line = command_line.setting_error_line("SERVICEBUILD_NAMESPACES", "shop\nbad", "x", "y")
    assert line == "SERVICEBUILD_NAMESPACES='shop\\nbad': x — y"


@pytest.mark.parametrize(
    ("variable", "value", "says"),
    [
        ("SERVICEBUILD_WORKERS", "many", "Input should be a valid integer"),
        ("SERVICEBUILD_VERBOSE", "maybe", "Input should be a valid boolean"),
        ("SERVICEBUILD_ALLOWED_PUSH_REGISTRIES", "shop=reg", "not valid JSON (Expecting value"),
        ("SERVICEBUILD_ALLOWED_PUSH_REGISTRIES", "", "not valid JSON (Expecting value"),
        (
            "SERVICEBUILD_ALLOWED_PUSH_REGISTRIES",
            '["registry.example.com"]',
            "Input should be a valid dictionary",
        ),
        (
            "SERVICEBUILD_ALLOWED_PUSH_REGISTRIES",
            '{"shop": [5000]}',
            "at shop.0: Input should be a valid string",
        ),
        ("SERVICEBUILD_BUILDKIT_IMAGE", "moby/buildkit", "must name an exact release tag"),
        ("SERVICEBUILD_BUILDKIT_IMAGE", "moby/buildkit:latest", "must name an exact release tag"),
        ("SERVICEBUILD_JOB_TTL_SECONDS", "-1", "Input should be greater than or equal to 0"),
        ("SERVICEBUILD_RESYNC_SECONDS", "-0.5", "Input should be greater than 0"),
        ("SERVICEBUILD_MAX_RUNNING_BUILDS", "-3", "Input should be greater than or equal to 0"),
        ("SERVICEBUILD_WORKERS", "0", "Input should be greater than or equal to 1"),
        ("servicebuild_workers", "0", "Input should be greater than or equal to 1"),
    ],
)
def test_a_bad_setting_is_one_line_naming_the_variable(
    monkeypatch: pytest.MonkeyPatch, variable: str, value: str, says: str
) -> None:
    [line] = lines_for(monkeypatch, {variable: value})
    field = Settings.model_fields[variable.upper().removeprefix("SERVICEBUILD_").lower()]
    assert line.startswith(f"{variable.upper()}={value!r}: {says}")
    assert line.endswith(f" — {' '.join((field.description or '').split())}"), "what the setting takes"
    assert "\n" not in line
    assert "Value error" not in line, "pydantic's prefix for a validator's message"


def test_bad_push_registries_say_what_is_expected(monkeypatch: pytest.MonkeyPatch) -> None:
    [line] = lines_for(monkeypatch, {"SERVICEBUILD_ALLOWED_PUSH_REGISTRIES": "shop=reg"})
    assert PUSH_REGISTRIES_TAKES in line
    assert '`{"shop": ["registry.example.com"], "*": ["registry.internal:5000"]}`' in line


def test_several_bad_settings_give_one_line_each(monkeypatch: pytest.MonkeyPatch) -> None:
    lines = lines_for(
        monkeypatch,
        {"SERVICEBUILD_WORKERS": "0", "SERVICEBUILD_VERBOSE": "maybe", "SERVICEBUILD_BUILDKIT_IMAGE": "x"},
    )
    assert sorted(line.split("=", 1)[0] for line in lines) == [
        "SERVICEBUILD_BUILDKIT_IMAGE",
        "SERVICEBUILD_VERBOSE",
        "SERVICEBUILD_WORKERS",
    ]


def test_a_settings_error_without_a_field_is_still_one_line() -> None:
    error = SettingsError("something\nunexpected")
    assert command_line.setting_error_lines(error, {}) == ["something unexpected"]


# As a process, with no kubeconfig to find: loading one would fail loudly


def commands() -> list[list[str]]:
    """`python -m servicebuild`, and the console script when it is installed beside this Python."""
    script = Path(sys.executable).parent / "servicebuild-operator"
    return [[sys.executable, "-m", "servicebuild"]] + ([[str(script)]] if script.exists() else [])


def environment_without_a_cluster(home: Path, **settings: str) -> dict[str, str]:
    env = {
        name: value
        for name, value in os.environ.items()
        if name != "KUBECONFIG" and not name.upper().startswith(("SERVICEBUILD_", "KUBERNETES_"))
    }
    return {**env, "HOME": str(home), **settings}  # no ~/.kube/config either


@pytest.mark.parametrize("command", commands(), ids=lambda command: Path(command[-1]).name)
def test_help_as_a_process(tmp_path: Path, command: list[str]) -> None:
    done = subprocess.run(
        [*command, "--help"],
        env=environment_without_a_cluster(tmp_path),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert (done.returncode, done.stderr) == (0, "")
    assert done.stdout.startswith("usage: servicebuild-operator [-h]\n")
    for variable in (
        "SERVICEBUILD_BUILDKIT_IMAGE",
        "SERVICEBUILD_ALLOWED_PUSH_REGISTRIES",
        "SERVICEBUILD_WORKERS",
    ):
        assert f"\n  {variable}  (default: " in done.stdout


@pytest.mark.parametrize("command", commands(), ids=lambda command: Path(command[-1]).name)
def test_a_bad_setting_as_a_process(tmp_path: Path, command: list[str]) -> None:
    done = subprocess.run(
        command,
        env=environment_without_a_cluster(tmp_path, SERVICEBUILD_ALLOWED_PUSH_REGISTRIES="shop=reg"),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 2, done.stderr
    [line] = done.stderr.splitlines()
    assert line.startswith(
        "servicebuild-operator: SERVICEBUILD_ALLOWED_PUSH_REGISTRIES='shop=reg': not valid JSON"
    )
    assert PUSH_REGISTRIES_TAKES in line
    assert done.stdout == ""


def test_the_settings_page_table_names_every_setting_and_no_other() -> None:
    page = (Path(__file__).parents[2] / "docs" / "settings.md").read_text()
    section = page.split("\n## Variables\n", 1)[1].split("\n## ", 1)[0]
    table = set(re.findall(r"^\| `(SERVICEBUILD_[A-Z_]+)` \|", section, flags=re.MULTILINE))
    assert table == {command_line.env_name(field) for field in Settings.model_fields}
