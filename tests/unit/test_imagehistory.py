"""We test these aspects:

- the real image of the calc sample: its base layer and the `COPY` BuildKit recorded without
  `--from=build`, restored from the target stage's instructions; base and added bytes split there;
- the real image of the checks sample: `ARG` and `ENV` made no layer; the `RUN` BuildKit recorded with
  the build argument's value in scope shows as written, the value nowhere;
- without the instructions, or with instructions that do not agree with the history, the split is
  unknown and the layers keep BuildKit's text (build argument values and `/bin/sh -c` cut);
- the largest layers: at most five, largest first;
- a history and a manifest that disagree on the number of layers are an invalid image;
- the target stage's instructions read from Dockerfiles: the last stage by default, a named target,
  continuations, comments and heredocs.
"""

import json
from pathlib import Path
from typing import Any

import pytest

from servicebuild.imagehistory import InvalidImage, Layer, breakdown, target_instructions

SAMPLES = Path(__file__).parent / "buildkit_samples"
CALC_BASE, CALC_COPY = 1_107_247, 346_243


def sample(name: str) -> Any:
    return json.loads((SAMPLES / name).read_text())


def dockerfile(name: str) -> str:
    return (SAMPLES / name).read_text()


def test_calc_image_restores_copy_from_and_splits_base_and_added_bytes() -> None:
    instructions = target_instructions(dockerfile("calc-Dockerfile"), "runtime")
    assert instructions == [
        "COPY --from=build /calc /usr/local/bin/calc",
        "USER 1000",
        'ENTRYPOINT ["/usr/local/bin/calc"]',
    ]

    layers = breakdown(sample("calc-runtime-config.json"), sample("calc-runtime-manifest.json"), instructions)

    assert layers.layers == (
        Layer(CALC_BASE, "base layer (made without a Dockerfile)"),
        Layer(CALC_COPY, "COPY --from=build /calc /usr/local/bin/calc"),
    )
    assert (layers.base_bytes, layers.added_bytes) == (CALC_BASE, CALC_COPY)


def test_checks_image_shows_run_as_written_without_the_build_argument_value() -> None:
    instructions = target_instructions(dockerfile("checks-Dockerfile"))

    layers = breakdown(sample("checks-config.json"), sample("checks-manifest.json"), instructions)

    assert layers.layers == (
        Layer(1_107_247, "base layer (made without a Dockerfile)"),
        Layer(142, 'RUN echo "$UNDEFINED_THING" > /x'),
    )
    assert (layers.base_bytes, layers.added_bytes) == (1_107_247, 142)
    assert "not-a-secret" not in repr(layers)


@pytest.mark.parametrize(
    ("config", "manifest", "instructions"),
    [
        ("calc-runtime-config.json", "calc-runtime-manifest.json", None),
        ("calc-runtime-config.json", "calc-runtime-manifest.json", ["RUN make", "USER 1000", "CMD x"]),
        ("calc-runtime-config.json", "calc-runtime-manifest.json", ["COPY a b"] * 9),
        ("checks-config.json", "checks-manifest.json", None),
    ],
)
def test_unknown_or_disagreeing_instructions_leave_the_split_unknown(
    config: str, manifest: str, instructions: list[str] | None
) -> None:
    layers = breakdown(sample(config), sample(manifest), instructions)

    assert (layers.base_bytes, layers.added_bytes) == (None, None)
    assert [layer.instruction for layer in layers.layers][1] in {
        "COPY /calc /usr/local/bin/calc",
        'RUN echo "$UNDEFINED_THING" > /x',
    }
    assert "not-a-secret" not in repr(layers)


@pytest.mark.parametrize(
    ("created_by", "instruction"),
    [
        ("/bin/sh -c #(nop) ADD file:4b03b5f5 in / ", "ADD file:4b03b5f5 in /"),
        ("/bin/sh -c apt-get update", "RUN apt-get update"),
        ("RUN |2 A=1 B=2 /bin/sh -c make all # buildkit", "RUN make all"),
        ("WORKDIR /src", "WORKDIR /src"),
        ("RUN " + "x" * 300, "RUN " + "x" * 195 + "…"),
    ],
)
def test_history_text_of_other_builders_reads_as_instructions(created_by: str, instruction: str) -> None:
    config = {"history": [{"created_by": created_by}]}
    manifest = {"layers": [{"size": 10}]}

    assert breakdown(config, manifest).layers == (Layer(10, instruction),)


def test_largest_layers_are_five_largest_first() -> None:
    sizes = [5, 70, 3, 70, 900, 1, 40]
    config = {"history": [{"created_by": f"RUN step {index}"} for index in range(len(sizes))]}
    manifest = {"layers": [{"size": size} for size in sizes]}

    largest = breakdown(config, manifest).largest

    assert [(layer.size_bytes, layer.instruction) for layer in largest] == [
        (900, "RUN step 4"),
        (70, "RUN step 1"),
        (70, "RUN step 3"),
        (40, "RUN step 6"),
        (5, "RUN step 0"),
    ]


@pytest.mark.parametrize(
    ("config", "manifest"),
    [
        ({"history": [{"created_by": "RUN a"}]}, {"layers": [{"size": 1}, {"size": 2}]}),
        ({"history": [{"created_by": "RUN a", "empty_layer": True}]}, {"layers": [{"size": 1}]}),
        ({}, {"layers": []}),
        ({"history": []}, {"layers": [{"size": "big"}]}),
    ],
)
def test_history_and_manifest_that_disagree_are_an_invalid_image(
    config: dict[str, Any], manifest: dict[str, Any]
) -> None:
    with pytest.raises(InvalidImage):
        breakdown(config, manifest)


GO_SERVICE = """\
# syntax=docker/dockerfile:1
FROM golang:1.23 AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
RUN --mount=type=cache,target=/root/.cache \\
    # a comment inside a continuation
    CGO_ENABLED=0 go build \\
      -o /app ./cmd/app

FROM gcr.io/distroless/static:nonroot AS Runtime
COPY --from=build /app /app
RUN <<EOF
echo FROM nowhere AS trap
EOF
USER nonroot
ENTRYPOINT ["/app"]
"""


@pytest.mark.parametrize(
    ("target", "expected"),
    [
        (None, ["COPY --from=build /app /app", "RUN <<EOF", "USER nonroot", 'ENTRYPOINT ["/app"]']),
        ("runtime", ["COPY --from=build /app /app", "RUN <<EOF", "USER nonroot", 'ENTRYPOINT ["/app"]']),
        (
            "build",
            [
                "WORKDIR /src",
                "COPY go.mod go.sum ./",
                "RUN go mod download",
                "COPY . .",
                "RUN --mount=type=cache,target=/root/.cache CGO_ENABLED=0 go build -o /app ./cmd/app",
            ],
        ),
        ("missing", None),
    ],
)
def test_target_instructions(target: str | None, expected: list[str] | None) -> None:
    assert target_instructions(GO_SERVICE, target) == expected


def test_a_dockerfile_without_from_has_no_stage() -> None:
    assert target_instructions("# nothing\n") is None
