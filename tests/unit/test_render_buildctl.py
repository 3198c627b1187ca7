"""We test these aspects of the buildctl arguments, asserted directly:

- a minimal build's whole argument list; cache flags following `mode` and `ref`, with `ignore-error=true`
  on the export, and none with the cache disabled; `registry.insecure=true` decided per registry;
  image names normalised;
- the Dockerfile path, the target and build args as frontend options (`--opt build-arg:K=V`, sorted),
  never shell text; `checks.skip` as `BUILDKIT_DOCKERFILE_CHECK=skip=…`, BuildKit's rules only;
- platforms as one option, all tags in one CSV-quoted `--output` name (also on an insecure registry),
  one `--import-cache` per import ref, deduplicated and off with the cache;
- `expand_tags` as a table, and its errors (a commit it needs, tags over 128 characters);
- attestations as frontend options (`attest:provenance=mode=…`, `attest:sbom=generator=<scanner>`):
  the spec's provenance, else the operator's default; none at all with provenance off and no SBOM; the
  Job's annotations record what the build attests.
"""

import csv

import pytest

from servicebuild.api.models import ServiceBuild
from servicebuild.render import job as render
from servicebuild.render.job import BuildInputs, buildctl_args, expand_tags, render_job
from support.render import (
    CASES,
    COMMIT,
    GIT_URL,
    HOSTILE,
    IMAGE,
    INPUTS,
    SCANNER_MIRROR,
    TIMESTAMP,
    build_container,
    flag_values,
    servicebuild,
    settings,
)

# The buildctl arguments


def test_buildctl_arguments_of_a_minimal_build() -> None:
    build, config, inputs = CASES["minimal"]
    assert buildctl_args(build.spec, config, inputs, generation=3) == [
        "build",
        "--progress=plain",
        "--frontend",
        "dockerfile.v0",
        "--local",
        "context=/workspace",
        "--local",
        "dockerfile=/workspace",
        "--opt",
        "filename=Dockerfile",
        "--opt",
        "attest:provenance=mode=min",
        "--output",
        f"type=image,name={IMAGE},push=true",
        "--export-cache",
        (
            "type=registry,ref=registry.example.com/shop/checkout:buildcache,mode=max,"
            "image-manifest=true,oci-mediatypes=true,ignore-error=true"
        ),
        "--import-cache",
        "type=registry,ref=registry.example.com/shop/checkout:buildcache",
        "--metadata-file",
        render.METADATA_FILE,
        "--debug-json-cache-metrics",
        render.CACHE_METRICS_FILE,
    ]


def test_cache_flags_follow_mode_and_ref() -> None:
    build, config, inputs = CASES["cache-min-explicit-ref"]
    args = buildctl_args(build.spec, config, inputs, generation=3)
    (export,) = flag_values(args, "--export-cache")
    (imported,) = flag_values(args, "--import-cache")
    assert export.split(",") == [
        "type=registry",
        "ref=registry.example.com/shop/cache:checkout",
        "mode=min",
        "image-manifest=true",
        "oci-mediatypes=true",
        "ignore-error=true",
    ]
    assert imported == "type=registry,ref=registry.example.com/shop/cache:checkout"


def test_no_cache_flags_when_disabled() -> None:
    build, config, inputs = CASES["cache-disabled"]
    args = buildctl_args(build.spec, config, inputs, generation=3)
    assert not flag_values(args, "--export-cache")
    assert not flag_values(args, "--import-cache")
    assert flag_values(args, "--output") == [f"type=image,name={IMAGE},push=true"]


@pytest.mark.parametrize(
    ("insecure", "output_insecure", "cache_insecure"),
    [
        pytest.param((), False, False, id="none"),
        pytest.param(("registry.local:5000",), True, False, id="output registry only"),
        pytest.param(("cache.local",), False, True, id="cache registry only"),
        pytest.param(("registry.local:5000", "cache.local"), True, True, id="both"),
        pytest.param(("registry.local",), False, False, id="host without the port does not match"),
    ],
)
def test_insecure_is_decided_per_registry(
    insecure: tuple[str, ...], *, output_insecure: bool, cache_insecure: bool
) -> None:
    build = servicebuild(
        output={"image": "registry.local:5000/shop/checkout:dev"},
        cache={"ref": "cache.local/shop/checkout:buildcache"},
    )
    args = buildctl_args(build.spec, settings(*insecure), INPUTS, generation=3)
    (output,) = flag_values(args, "--output")
    (export,) = flag_values(args, "--export-cache")
    (imported,) = flag_values(args, "--import-cache")
    assert output.endswith(",registry.insecure=true") is output_insecure
    assert export.endswith(",registry.insecure=true") is cache_insecure
    assert imported.endswith(",registry.insecure=true") is cache_insecure


def test_image_names_are_normalised() -> None:
    build = servicebuild(output={"image": "checkout"})
    args = buildctl_args(build.spec, settings(), INPUTS, generation=3)
    assert flag_values(args, "--output") == ["type=image,name=docker.io/library/checkout:latest,push=true"]
    assert "ref=docker.io/library/checkout:buildcache" in flag_values(args, "--import-cache")[0].split(",")


def test_dockerfile_path_and_target_are_frontend_options() -> None:
    build = servicebuild(dockerfile="docker/Dockerfile", target="runtime")
    opts = flag_values(buildctl_args(build.spec, settings(), INPUTS, generation=3), "--opt")
    assert opts == ["filename=docker/Dockerfile", "target=runtime", "attest:provenance=mode=min"]


def test_build_args_are_sorted_options_and_never_shell_text() -> None:
    build = servicebuild(buildArgs={"VERSION": "1.4.2", "MOTD": HOSTILE, "A_FIRST": ""})
    job = render_job(build, settings(), INPUTS)
    container = build_container(job)
    assert flag_values(container["args"], "--opt") == [
        "filename=Dockerfile",
        "build-arg:A_FIRST=",
        f"build-arg:MOTD={HOSTILE}",
        "build-arg:VERSION=1.4.2",
        "attest:provenance=mode=min",
    ]
    assert container["command"] == ["sh", "-c", render.WRAPPER_SCRIPT, render.WRAPPER_NAME]
    shell_text = " ".join(container["command"])
    for fragment in ("VERSION", "1.4.2", "MOTD", "pwned", "registry.example.com"):
        assert fragment not in shell_text


def test_skipped_build_checks_reach_buildkit_and_the_operators_own_rules_do_not() -> None:
    build = servicebuild(
        buildArgs={"VERSION": "1"}, checks={"skip": ["FromAsCasing", "RunsAsRoot", "JSONArgsRecommended"]}
    )
    opts = flag_values(buildctl_args(build.spec, settings(), INPUTS, generation=3), "--opt")
    assert [opt for opt in opts if opt.startswith("build-arg:")] == [
        "build-arg:VERSION=1",
        "build-arg:BUILDKIT_DOCKERFILE_CHECK=skip=FromAsCasing,JSONArgsRecommended",
    ]
    only_own = servicebuild(checks={"skip": ["RunsAsRoot"]})
    only_own_opts = flag_values(buildctl_args(only_own.spec, settings(), INPUTS, generation=3), "--opt")
    assert not [opt for opt in only_own_opts if opt.startswith("build-arg:")]


# Platforms, tags and caches


def test_platforms_are_one_frontend_option() -> None:
    args = build_container(render_job(*CASES["multi-arch"]))["args"]
    assert "platform=linux/amd64,linux/arm64" in flag_values(args, "--opt")
    assert "--platform" not in args


def test_every_tag_goes_into_one_quoted_output_name() -> None:
    build, config, inputs = CASES["tags"]
    (output,) = flag_values(buildctl_args(build.spec, config, inputs, generation=3), "--output")
    repository = "registry.example.com/shop/checkout"
    references = [
        f"{repository}:{tag}" for tag in ("1.4.2", COMMIT[:12], f"main-{TIMESTAMP}", "build-3", "latest")
    ]
    assert output == f'type=image,"name={",".join(references)}",push=true'
    # buildctl reads --output as one CSV record (encoding/csv or go-csvvalue): the quotes keep the list whole.
    (fields,) = csv.reader([output])
    assert fields == ["type=image", f"name={','.join(references)}", "push=true"]
    assert references == expand_tags(build.spec, inputs, 3)


def test_tags_on_an_insecure_registry() -> None:
    build = servicebuild(output={"image": "registry.local:5000/shop/checkout:dev", "tags": ["g{generation}"]})
    (output,) = flag_values(
        buildctl_args(build.spec, settings("registry.local:5000"), INPUTS, generation=7), "--output"
    )
    assert output == (
        'type=image,"name=registry.local:5000/shop/checkout:dev,registry.local:5000/shop/checkout:g7",'
        "push=true,registry.insecure=true"
    )


@pytest.mark.parametrize(
    ("image", "tags", "commit", "expected"),
    [
        pytest.param(IMAGE, [], None, [IMAGE], id="no tags: the image"),
        pytest.param("checkout", [], None, ["docker.io/library/checkout:latest"], id="normalised"),
        pytest.param(
            IMAGE,
            ["{commit}", "{shortCommit}"],
            COMMIT,
            [
                IMAGE,
                f"registry.example.com/shop/checkout:{COMMIT}",
                f"registry.example.com/shop/checkout:{COMMIT[:12]}",
            ],
            id="commit and short commit",
        ),
        pytest.param(
            IMAGE,
            ["{generation}", "{timestamp}", "v{generation}-{timestamp}"],
            None,
            [
                IMAGE,
                "registry.example.com/shop/checkout:12",
                f"registry.example.com/shop/checkout:{TIMESTAMP}",
                f"registry.example.com/shop/checkout:v12-{TIMESTAMP}",
            ],
            id="generation and timestamp",
        ),
        pytest.param(
            IMAGE,
            ["1.4.2", "stable"],
            None,
            [IMAGE, "registry.example.com/shop/checkout:stable"],
            id="deduplicated",
        ),
        pytest.param(
            "registry.example.com/shop/checkout",
            ["sha-{shortCommit}_{generation}.{timestamp}"],
            COMMIT,
            [
                "registry.example.com/shop/checkout:latest",
                f"registry.example.com/shop/checkout:sha-{COMMIT[:12]}_12.{TIMESTAMP}",
            ],
            id="mixed, default tag",
        ),
    ],
)
def test_expand_tags(image: str, tags: list[str], commit: str | None, expected: list[str]) -> None:
    source = {"git": {"url": GIT_URL}} if commit else {"configMap": {"name": "checkout-context"}}
    spec = servicebuild(source=source, output={"image": image, "tags": tags}).spec
    assert expand_tags(spec, BuildInputs(timestamp=TIMESTAMP, commit=commit), 12) == expected


def tagged(*tags: str) -> ServiceBuild:
    return servicebuild(source={"git": {"url": GIT_URL}}, output={"image": IMAGE, "tags": list(tags)})


def test_expand_tags_needs_the_commit_it_names() -> None:
    spec = tagged("ok", "c-{shortCommit}").spec
    with pytest.raises(
        ValueError, match=r"spec\.output\.tags\[1\]: 'c-\{shortCommit\}' needs the resolved git commit"
    ):
        expand_tags(spec, INPUTS, 3)


def test_expand_tags_allows_exactly_128_characters() -> None:
    longest = "x" * 88 + "{commit}"  # 96 characters that expand to 128
    references = expand_tags(tagged(longest).spec, BuildInputs(timestamp=TIMESTAMP, commit=COMMIT), 3)
    assert references[1] == f"registry.example.com/shop/checkout:{'x' * 88}{COMMIT}"
    assert len(references[1].rsplit(":", 1)[1]) == 128


def test_expand_tags_rejects_tags_longer_than_128_characters() -> None:
    spec = tagged("ok", "{commit}" * 4).spec  # 32 characters that expand to 160
    with pytest.raises(ValueError, match=r"spec\.output\.tags\[1\]: .* expands to 160 characters"):
        expand_tags(spec, BuildInputs(timestamp=TIMESTAMP, commit=COMMIT), 3)


def test_cache_import_refs_are_extra_imports_each_with_its_own_registry() -> None:
    args = build_container(render_job(*CASES["cache-import-refs"]))["args"]
    assert flag_values(args, "--import-cache") == [
        "type=registry,ref=registry.example.com/shop/checkout:buildcache",
        "type=registry,ref=registry.example.com/shop/checkout:buildcache-main",
        "type=registry,ref=registry.local:5000/shop/checkout:buildcache,registry.insecure=true",
    ]
    assert len(flag_values(args, "--export-cache")) == 1  # import refs are never written


def test_cache_import_refs_are_deduplicated_and_off_with_the_cache() -> None:
    refs = ["registry.example.com/shop/checkout:buildcache", "registry.example.com/shop/checkout:main"]
    build = servicebuild(cache={"importRefs": refs})
    assert flag_values(buildctl_args(build.spec, settings(), INPUTS, generation=3), "--import-cache") == [
        "type=registry,ref=registry.example.com/shop/checkout:buildcache",
        "type=registry,ref=registry.example.com/shop/checkout:main",
    ]
    disabled = servicebuild(cache={"disabled": True, "importRefs": refs})
    assert not flag_values(buildctl_args(disabled.spec, settings(), INPUTS, generation=3), "--import-cache")


# Attestations


@pytest.mark.parametrize(
    ("case", "options", "annotations"),
    [
        ("minimal", ["attest:provenance=mode=min"], {"servicebuild.dev/provenance": "min"}),
        (
            "provenance-max-sbom",
            [
                "attest:provenance=mode=max",
                "attest:sbom=generator=docker.io/docker/buildkit-syft-scanner:stable-1",
            ],
            {
                "servicebuild.dev/provenance": "max",
                "servicebuild.dev/sbom-scanner": "docker.io/docker/buildkit-syft-scanner:stable-1",
            },
        ),
        ("provenance-off", [], {"servicebuild.dev/provenance": "off"}),
        (
            "sbom-only-by-settings",
            [f"attest:sbom=generator={SCANNER_MIRROR}"],
            {"servicebuild.dev/provenance": "off", "servicebuild.dev/sbom-scanner": SCANNER_MIRROR},
        ),
    ],
)
def test_attestations_are_frontend_options_recorded_on_the_job(
    case: str, options: list[str], annotations: dict[str, str]
) -> None:
    build, config, inputs = CASES[case]
    job = render_job(build, config, inputs)
    args = build_container(job)["args"]
    assert [value for value in flag_values(args, "--opt") if value.startswith("attest:")] == options
    recorded = job["metadata"]["annotations"]
    assert {key: recorded[key] for key in recorded if "provenance" in key or "sbom" in key} == annotations


@pytest.mark.parametrize(
    ("spec_provenance", "default", "expected"),
    [
        (None, "min", "min"),
        (None, "max", "max"),
        (None, "off", None),
        ("min", "off", "min"),
        ("off", "max", None),
    ],
)
def test_the_spec_provenance_wins_over_the_operators_default(
    spec_provenance: str | None, default: str, expected: str | None
) -> None:
    attestations = {"provenance": spec_provenance} if spec_provenance else {}
    build = servicebuild(attestations=attestations)
    args = buildctl_args(build.spec, settings(default_provenance=default), INPUTS, generation=3)
    provenance = [value for value in flag_values(args, "--opt") if value.startswith("attest:provenance=")]
    assert provenance == ([f"attest:provenance=mode={expected}"] if expected else [])
