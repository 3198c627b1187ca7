"""We test these aspects of refusing `max` provenance for secret-looking build arguments:

- `looks_secret` as a table ported from BuildKit's SecretsUsedInArgOrEnv check (`getSecretsRegex`,
  frontend/dockerfile/dockerfile2llb/validations.go, and the names its tests and docs show): a secret
  token as the whole name, its first or last word, or a word between underscores, in any case; not inside
  a word; `public`, `file` or `version` as a word clears it;
- `provenance_problem`: only with `max`, whether the spec asks for it or the operator's default does
  (the message says which), naming every flagged argument and never a value; `min`, `off` and harmless
  names pass.
"""

import pytest

from servicebuild.api.models import ServiceBuildSpec
from servicebuild.config import Settings
from servicebuild.failures import Reason
from servicebuild.policy import looks_secret, provenance_problem


@pytest.mark.parametrize(
    ("name", "flagged"),
    [
        ("password", True),
        ("PASSWORD", True),
        ("DATABASE_PASSWORD", True),
        ("db_password", True),
        ("GITHUB_TOKEN", True),
        ("NPM_TOKEN", True),
        ("api_key", True),
        ("APIKEY", True),
        ("AWS_SECRET_ACCESS_KEY", True),
        ("secret_MESSAGE", True),
        ("AUTH", True),
        ("AUTH_HEADER", True),
        ("MY_CREDENTIALS", True),
        ("CREDENTIAL_HELPER", True),
        ("SMTP_PASSWD", True),
        ("ADMIN_PWORD", True),
        ("SSH_KEY_PASSPHRASE", True),
        ("PUBLIC_KEY", False),
        ("GPG_KEY_FILE", False),
        ("TOKEN_VERSION", False),
        ("public_token", False),
        ("MONKEY", False),
        ("KEYCHAIN", False),
        ("PASSWORDS", False),
        ("TOKENIZER_MODEL", False),
        ("AUTHOR", False),
        ("SECRETARY", False),
        ("VERSION", False),
        ("GO_VERSION", False),
        ("LDFLAGS", False),
        ("_", False),
    ],
)
def test_looks_secret_as_buildkit_flags_names(name: str, flagged: bool) -> None:
    assert looks_secret(name) is flagged


def spec(**attestations: object) -> ServiceBuildSpec:
    return ServiceBuildSpec.model_validate(
        {
            "source": {"configMap": {"name": "ctx"}},
            "output": {"image": "registry.example.com/shop/checkout:1"},
            "buildArgs": {"VERSION": "1.4.2", "NPM_TOKEN": "npm_s3cr3t", "db_password": "hunter2"},
            "attestations": attestations,
        }
    )


def test_max_with_secret_looking_build_args_is_refused_naming_them() -> None:
    problem = provenance_problem(spec(provenance="max"), Settings())
    assert problem is not None
    assert problem.reason == Reason.INVALID_SPEC
    assert "NPM_TOKEN, db_password" in problem.message
    assert "spec.attestations.provenance" in problem.message
    assert "spec.secrets" in problem.message
    assert "VERSION" not in problem.message
    assert "npm_s3cr3t" not in problem.message
    assert "hunter2" not in problem.message


def test_max_from_the_operators_default_is_refused_too_and_says_so() -> None:
    problem = provenance_problem(spec(), Settings(default_provenance="max"))
    assert problem is not None
    assert "SERVICEBUILD_DEFAULT_PROVENANCE" in problem.message


@pytest.mark.parametrize(
    ("attestations", "default"),
    [({"provenance": "min"}, "max"), ({"provenance": "off"}, "max"), ({}, "min"), ({"sbom": True}, "off")],
)
def test_min_and_off_record_no_build_argument_values(attestations: dict[str, object], default: str) -> None:
    assert provenance_problem(spec(**attestations), Settings(default_provenance=default)) is None


def test_max_without_secret_looking_build_args_passes() -> None:
    harmless = spec(provenance="max").model_copy(update={"build_args": {"VERSION": "1", "PUBLIC_KEY": "k"}})
    assert provenance_problem(harmless, Settings()) is None
