"""We test these aspects of the findings as the status shows them (`servicebuild.findings`):

- a ConfigMap context is checked as the build Pod lays it out: each key a file (binaryData too), or a
  `.tar.gz` archive with folders unpacked; `<Dockerfile>.dockerignore` beside the Dockerfile wins over
  `.dockerignore`; `spec.target`, `spec.buildArgs` and `spec.checks.skip` apply;
- no findings, rather than an error, for a Dockerfile that is missing or that BuildKit would refuse (a
  target it lacks),
  for an archive that is no gzip or unpacks to more than the operator reads;
- BuildKit's build checks from the real sample log become warning findings with their rule, line and the
  rule's documentation; on success they replace the earlier build checks and keep the operator's own
  findings; skipped rules stay out; the same check reported twice is one finding;
- `policy: Fail` blocks on an `error` finding only, naming the rule and the line; `Warn` never blocks;
- `DockerfileClean` is False with the worst rule as its reason, True for none or only `info` findings.
"""

import base64
import io
import tarfile
from pathlib import Path
from typing import Any

from servicebuild.api.models import Checks, Finding, FindingSeverity, ServiceBuildSpec
from servicebuild.buildcontext import MAX_UNPACKED_BYTES
from servicebuild.buildlog import parse_plain
from servicebuild.failures import Reason
from servicebuild.findings import (
    blocking_failure,
    clean_condition,
    configmap_findings,
    with_build_checks,
)
from support.archives import tar_gz

CASES = Path(__file__).parent / "dockerfiles"
SAMPLES = Path(__file__).parent / "buildkit_samples"
NODE_DOCKERFILE = """\
FROM node:22-slim
WORKDIR /app
COPY . .
RUN npm ci --omit=dev
USER node
CMD ["node", "server.js"]
"""


def spec(archive: str | None = None, **fields: Any) -> ServiceBuildSpec:
    config_map = {"name": "ctx", **({"archive": archive} if archive else {})}
    return ServiceBuildSpec.model_validate(
        {"source": {"configMap": config_map}, "output": {"image": "registry.test/shop/web:1"}, **fields}
    )


def rules(findings: tuple[Finding, ...]) -> set[tuple[str, str | None, int | None]]:
    return {(finding.rule, finding.stage, finding.line) for finding in findings}


def archive_of(directory: Path, dockerfile: Path) -> str:
    """The case's context and Dockerfile as a `.tar.gz`, base64 as a ConfigMap's binaryData holds it."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        tar.add(directory, arcname=".")
        tar.add(dockerfile, arcname="./Dockerfile")
    return base64.b64encode(buffer.getvalue()).decode()


def test_keys_are_files_and_a_copied_env_file_is_a_secret_in_the_image() -> None:
    data = {"Dockerfile": NODE_DOCKERFILE, "package.json": "{}", "server.js": "", ".env": "TOKEN=x"}

    found = configmap_findings(spec(), {"data": data})

    assert rules(found) == {("SecretInImage", "stage-0", 3), ("CopyAllBeforeDependencies", "stage-0", 3)}
    assert found[0].severity == FindingSeverity.ERROR, "errors come first"
    assert "`.env`" in found[0].message


def test_the_dockerignore_beside_the_dockerfile_wins_and_binary_keys_are_files() -> None:
    data = {"app.Dockerfile": NODE_DOCKERFILE, "app.Dockerfile.dockerignore": ".env\n", ".dockerignore": ""}
    binary = {".env": base64.b64encode(b"TOKEN=x").decode(), "package.json": base64.b64encode(b"{}").decode()}

    found = configmap_findings(spec(dockerfile="app.Dockerfile"), {"data": data, "binaryData": binary})

    assert rules(found) == {("CopyAllBeforeDependencies", "stage-0", 3)}


def test_an_archive_with_folders_is_checked_as_unpacked() -> None:
    case = CASES / "node-build-tree"
    configmap = {"binaryData": {"ctx.tar.gz": archive_of(case / "context", case / "Dockerfile")}}

    found = configmap_findings(spec(archive="ctx.tar.gz"), configmap)

    assert rules(found) == {("FinalStageCopiesBuildTree", "stage-1", 11)}


def test_target_build_args_and_skip_apply() -> None:
    case = CASES / "python-test-stage"
    archive = {"binaryData": {"ctx.tgz": archive_of(case / "context", case / "Dockerfile")}}

    assert rules(configmap_findings(spec(archive="ctx.tgz"), archive)) == {("TestStageNotBuilt", "test", 7)}
    assert rules(configmap_findings(spec(archive="ctx.tgz", target="test"), archive)) == {
        ("RunsAsRoot", "test", 7)
    }
    skipping = spec(archive="ctx.tgz", checks={"skip": ["TestStageNotBuilt"]})
    assert configmap_findings(skipping, archive) == ()


def test_nothing_to_check_gives_no_findings() -> None:
    no_release_stage = {"data": {"Dockerfile": "FROM node:22 AS build\nRUN npm ci\n"}}
    leaky = {"Dockerfile": NODE_DOCKERFILE.encode(), ".env": b"TOKEN=x"}
    small, large = tar_gz(leaky), tar_gz({**leaky, "assets.bin": b"\0" * MAX_UNPACKED_BYTES})
    assert configmap_findings(spec(archive="ctx.tgz"), {"binaryData": {"ctx.tgz": small}}) != ()

    assert configmap_findings(spec(), {"data": {"server.js": ""}}) == ()
    assert configmap_findings(spec(target="release"), no_release_stage) == ()
    assert configmap_findings(spec(archive="ctx.tgz"), {"binaryData": {"ctx.tgz": "bm90IGd6aXA="}}) == ()
    assert configmap_findings(spec(archive="ctx.tgz"), {"binaryData": {"ctx.tgz": large}}) == ()


def sample_warnings() -> Any:
    return parse_plain((SAMPLES / "checks-plain.log").read_text()).warnings


def test_buildkit_checks_from_the_sample_become_warnings_with_their_line_and_docs() -> None:
    found = with_build_checks((), sample_warnings(), Checks())

    assert rules(found) == {
        ("FromAsCasing", None, 1),
        ("SecretsUsedInArgOrEnv", None, 2),
        ("LegacyKeyValueFormat", None, 3),
        ("JSONArgsRecommended", None, 5),
    }
    assert {finding.severity for finding in found} == {FindingSeverity.WARNING}
    casing = next(finding for finding in found if finding.rule == "FromAsCasing")
    assert casing.message == (
        "'as' and 'FROM' keywords' casing do not match. "
        "See https://docs.docker.com/go/dockerfile/rule/from-as-casing/"
    )
    json_args = next(finding for finding in found if finding.rule == "JSONArgsRecommended")
    assert json_args.message.endswith("https://docs.docker.com/go/dockerfile/rule/json-args-recommended/")


def test_build_checks_replace_earlier_ones_keep_the_operators_own_and_skip() -> None:
    own = Finding(rule="RunsAsRoot", severity=FindingSeverity.INFO, stage="base", line=1, message="root")
    stale = Finding(rule="MaintainerDeprecated", severity=FindingSeverity.WARNING, line=9, message="old")
    warnings = [*sample_warnings(), *sample_warnings()]

    found = with_build_checks((own, stale), warnings, Checks(skip=["FromAsCasing", "RunsAsRoot"]))

    assert [finding.rule for finding in found] == [
        "SecretsUsedInArgOrEnv",
        "LegacyKeyValueFormat",
        "JSONArgsRecommended",
    ]
    assert with_build_checks((own, stale), [], Checks()) == (own,)


ERROR = Finding(rule="SecretInImage", severity=FindingSeverity.ERROR, stage="s", line=4, message="leak")
WARNING = Finding(rule="FromAsCasing", severity=FindingSeverity.WARNING, line=1, message="casing")
INFO = Finding(rule="UnpinnedBaseImage", severity=FindingSeverity.INFO, stage="s", line=1, message="pin")


def test_policy_fail_blocks_on_an_error_naming_rule_and_line() -> None:
    failure = blocking_failure((ERROR, WARNING), Checks(policy="Fail"), "build/Dockerfile")

    assert failure is not None
    assert failure.reason == Reason.DOCKERFILE_CHECK_FAILED
    assert "SecretInImage" in failure.message
    assert "build/Dockerfile line 4" in failure.message
    assert blocking_failure((WARNING, INFO), Checks(policy="Fail"), "Dockerfile") is None
    assert blocking_failure((ERROR,), Checks(), "Dockerfile") is None


def test_dockerfile_clean_names_the_worst_rule() -> None:
    status, reason, message = clean_condition((ERROR, WARNING, INFO))
    assert (status, reason) == ("False", "SecretInImage")
    assert message.startswith("Findings: 1 error, 1 warning, 1 info. The worst, line 4: leak")
    assert clean_condition((WARNING,))[:2] == ("False", "FromAsCasing")
    assert clean_condition((INFO,))[:2] == ("True", "OnlyInfoFindings")
    assert clean_condition(())[:2] == ("True", "NoFindings")
