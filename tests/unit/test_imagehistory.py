"""We test these aspects:

- the real `runtime` image: each layer with its size and the instruction that made it; the
  `--from=build` BuildKit drops from the history is back, with the Dockerfile line; base bytes are the
  busybox layer, added bytes the copied binary;
- the real checks image: a RUN is shown as the Dockerfile writes it, and the build arg values the history
  records (`RUN |1 API_TOKEN=…`) never reach an instruction, matched or not;
- base and added layers are told apart by counting the target stage's instructions from the end (every
  instruction, layer or not, has a history entry): a stage built on another stage counts that stage's
  layers as its base, a `FROM scratch` stage has none; without instructions, or when their words differ
  from the history's, by the trailing entries created with the image, else unknown;
- the largest layers: at most five, largest first, the lower layer first among equals;
- any unusable config or manifest (layer counts that differ, garbage) gives None, never an exception.
"""

import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from servicebuild.imagehistory import ImageLayers, Layer, StageInstruction, image_layers

SAMPLES = Path(__file__).parent / "buildkit_samples"
BUSYBOX_LAYER = "sha256:ade99f0b15910877bda37f1454641fc2326ae8382b42d72beff74baf0c1781d1"
CALC_LAYER = "sha256:7921f62f40df27061652791ebc89ba37c8903437615f311d2115ceae3a6c4ca6"
CHECKS_LAYER = "sha256:3abaadd76ffcfe80fb52b201339bcb02076d47dc2ca8c4f5a2ac8dfa3fec7533"
BASE_WORDS = "base layer (made without a Dockerfile)"
CREATED = "2026-11-30T05:47:07.142704287Z"


def sample(name: str) -> str:
    return (SAMPLES / name).read_text()


def stage_of(dockerfile: str, stage: str | None = None) -> list[StageInstruction]:
    """A stage's instructions with their lines (its FROM included): enough Dockerfile for these tests."""
    instructions: list[StageInstruction] = []
    inside = False
    for number, line in enumerate(dockerfile.splitlines(), start=1):
        words = line.split()
        if not words or words[0].startswith("#"):
            continue
        if words[0].upper() == "FROM":
            if inside:
                break
            inside = stage is None or [word.lower() for word in words[-2:]] == ["as", stage]
        if inside:
            instructions.append(StageInstruction(number, line.strip()))
    return instructions


def digest(number: int) -> str:
    return f"sha256:{number:064x}"


def image(history: list[dict[str, Any]], sizes: list[int], created: str | None = CREATED) -> tuple[str, str]:
    config: dict[str, Any] = {"history": history}
    if created is not None:
        config["created"] = created
    manifest = {"layers": [{"digest": digest(index), "size": size} for index, size in enumerate(sizes)]}
    return json.dumps(config), json.dumps(manifest)


def entry(created_by: str, *, empty: bool = False, created: str = CREATED) -> dict[str, Any]:
    item: dict[str, Any] = {"created": created, "created_by": created_by, "comment": "buildkit.dockerfile.v0"}
    if empty:
        item["empty_layer"] = True
    return item


OLD = "2025-01-01T00:00:00Z"


def test_the_runtime_image_with_its_stage() -> None:
    stage = stage_of(sample("calc-Dockerfile"), "runtime")
    assert stage[1] == StageInstruction(11, "COPY --from=build /calc /usr/local/bin/calc")
    layers = image_layers(sample("calc-runtime-config.json"), sample("calc-runtime-manifest.json"), stage)
    base = Layer(0, BUSYBOX_LAYER, 1_107_247, BASE_WORDS, None, base=True)
    calc = Layer(1, CALC_LAYER, 346_243, "COPY --from=build /calc /usr/local/bin/calc", 11, base=False)
    assert layers == ImageLayers((base, calc), base_bytes=1_107_247, added_bytes=346_243, matched=True)
    assert layers.largest() == (base, calc)
    assert layers.largest(1) == (base,)


def test_the_runtime_image_without_its_stage() -> None:
    layers = image_layers(sample("calc-runtime-config.json"), sample("calc-runtime-manifest.json"))
    assert layers is not None
    assert [(layer.instruction, layer.line, layer.base) for layer in layers.layers] == [
        (BASE_WORDS, None, True),
        ("COPY /calc /usr/local/bin/calc", None, False),  # as BuildKit recorded it
    ]
    assert (layers.base_bytes, layers.added_bytes, layers.matched) == (1_107_247, 346_243, False)


def test_the_checks_image_shows_the_run_as_written_and_no_build_arg_value() -> None:
    config, manifest = sample("checks-config.json"), sample("checks-manifest.json")
    assert "API_TOKEN=not-a-secret /bin/sh -c" in config
    matched = image_layers(config, manifest, stage_of(sample("checks-Dockerfile")))
    assert matched == ImageLayers(
        (
            Layer(0, BUSYBOX_LAYER, 1_107_247, BASE_WORDS, None, base=True),
            Layer(1, CHECKS_LAYER, 142, 'RUN echo "$UNDEFINED_THING" > /x', 4, base=False),
        ),
        base_bytes=1_107_247,
        added_bytes=142,
        matched=True,
    )
    unmatched = image_layers(config, manifest)
    assert unmatched is not None
    assert unmatched.layers[1].instruction == "RUN"
    assert (unmatched.base_bytes, unmatched.added_bytes) == (1_107_247, 142)


def test_dicts_and_bytes_are_read_like_text() -> None:
    config, manifest = sample("calc-runtime-config.json"), sample("calc-runtime-manifest.json")
    expected = image_layers(config, manifest)
    assert image_layers(json.loads(config), json.loads(manifest)) == expected
    assert image_layers(config.encode(), bytearray(manifest.encode())) == expected


def test_a_stage_built_on_another_stage_counts_that_stage_as_its_base() -> None:
    dockerfile = sample("calc-Dockerfile")
    test_stage = stage_of(dockerfile, "test")
    assert [step.text.split()[0] for step in test_stage] == ["FROM", "COPY", "RUN"]
    history = [
        {"created": OLD, "created_by": BASE_WORDS},
        entry("WORKDIR /src"),
        entry("COPY util.h util.c calc.c ./ # buildkit"),
        entry("RUN /bin/sh -c gcc -static -Os -o /calc calc.c util.c # buildkit"),
        entry("COPY util_test.c ./ # buildkit"),
        entry("RUN /bin/sh -c gcc -o /tmp/t util_test.c util.c && /tmp/t # buildkit"),
    ]
    layers = image_layers(*image(history, [1000, 1, 20, 300, 4, 50]), test_stage)
    assert layers is not None
    assert [(layer.base, layer.line) for layer in layers.layers] == [
        (True, None),
        (True, None),
        (True, None),
        (True, None),
        (False, 8),
        (False, 9),
    ]
    assert (layers.base_bytes, layers.added_bytes) == (1321, 54)
    assert layers.layers[5].instruction == "RUN gcc -o /tmp/t util_test.c util.c && /tmp/t"


def test_a_scratch_stage_has_no_base_bytes() -> None:
    stage = [
        StageInstruction(1, "FROM scratch"),
        StageInstruction(2, "COPY --from=build --chmod=755 /app /app"),
    ]
    layers = image_layers(*image([entry("COPY /app /app # buildkit")], [77]), stage)
    assert layers == ImageLayers(
        (Layer(0, digest(0), 77, "COPY --from=build --chmod=755 /app /app", 2, base=False),),
        0,
        77,
        matched=True,
    )


def test_every_flag_of_a_copy_or_add_comes_back() -> None:
    stage = [
        StageInstruction(3, "COPY --link --chown=app:app --from=build /out/ /srv/"),
        StageInstruction(4, "ADD --checksum=sha256:abc https://example.com/x.tgz /x.tgz"),
        StageInstruction(5, "COPY already --flagged"),
    ]
    history = [
        {"created": OLD, "created_by": BASE_WORDS},
        entry("COPY /out/ /srv/ # buildkit"),
        entry("ADD https://example.com/x.tgz /x.tgz # buildkit"),
        entry("COPY --from=x y # buildkit"),
    ]
    layers = image_layers(*image(history, [1, 2, 3, 4]), stage)
    assert layers is not None
    assert [layer.instruction for layer in layers.layers[1:]] == [
        "COPY --link --chown=app:app --from=build /out/ /srv/",
        "ADD --checksum=sha256:abc https://example.com/x.tgz /x.tgz",
        "COPY --from=x y",  # nothing to restore: the history has a flag there already
    ]


def test_words_that_differ_fall_back_to_the_image_time() -> None:
    stage = [StageInstruction(11, "RUN echo changed"), StageInstruction(12, "USER 1000")]
    history = [
        {"created": OLD, "created_by": BASE_WORDS},
        entry("COPY /calc /usr/local/bin/calc # buildkit"),
        entry("USER 1000", empty=True),
    ]
    layers = image_layers(*image(history, [10, 5]), stage)
    assert layers is not None
    assert [(layer.instruction, layer.line, layer.base) for layer in layers.layers] == [
        (BASE_WORDS, None, True),
        ("COPY /calc /usr/local/bin/calc", None, False),
    ]
    assert (layers.base_bytes, layers.added_bytes, layers.matched) == (10, 5, False)


def test_more_instructions_than_history_fall_back_too() -> None:
    stage = [StageInstruction(line, "USER 1") for line in range(5)]
    layers = image_layers(*image([{"created": OLD}, entry("USER 1", empty=True)], [3]), stage)
    assert layers is not None
    assert (layers.base_bytes, layers.added_bytes, layers.matched) == (3, 0, False)


@pytest.mark.parametrize(
    ("history", "created"),
    [
        pytest.param([entry("COPY a b"), entry("RUN x")], None, id="no image time"),
        pytest.param([entry("COPY a b"), entry("RUN x")], CREATED, id="every entry at the image time"),
        pytest.param([entry("COPY a b", created=OLD), entry("RUN x", created=OLD)], CREATED, id="none at it"),
    ],
)
def test_without_instructions_or_times_the_split_is_unknown(
    history: list[dict[str, Any]], created: str | None
) -> None:
    layers = image_layers(*image(history, [1, 2], created=created))
    assert layers is not None
    assert (layers.base_bytes, layers.added_bytes) == (None, None)
    assert [layer.base for layer in layers.layers] == [None, None]


def test_a_layer_without_words() -> None:
    layers = image_layers(*image([{"created": OLD}, {"created_by": "  "}], [1, 2]))
    assert layers is not None
    assert [layer.instruction for layer in layers.layers] == [None, None]


def test_the_five_largest_layers() -> None:
    history = [entry(f"RUN /bin/sh -c step {index} # buildkit") for index in range(8)]
    layers = image_layers(*image(history, [5, 90, 7, 90, 1, 60, 30, 2]))
    assert layers is not None
    assert [(layer.index, layer.size_bytes) for layer in layers.largest()] == [
        (1, 90),
        (3, 90),
        (5, 60),
        (6, 30),
        (2, 7),
    ]
    assert layers.largest(0) == ()
    assert layers.largest(-1) == ()


GOOD_CONFIG = {"history": [entry("COPY a b")]}
GOOD_MANIFEST = {"layers": [{"digest": digest(1), "size": 10}]}


@pytest.mark.parametrize(
    ("config", "manifest"),
    [
        pytest.param(None, None, id="None"),
        pytest.param("not json", "{", id="text"),
        pytest.param("[]", "[]", id="lists"),
        pytest.param({}, GOOD_MANIFEST, id="no history"),
        pytest.param({"history": "x"}, GOOD_MANIFEST, id="history not a list"),
        pytest.param({"history": [1]}, GOOD_MANIFEST, id="entry not an object"),
        pytest.param(GOOD_CONFIG, {}, id="no layers"),
        pytest.param(GOOD_CONFIG, {"layers": [{"digest": digest(1), "size": -1}]}, id="negative size"),
        pytest.param(GOOD_CONFIG, {"layers": [{"digest": digest(1), "size": True}]}, id="boolean size"),
        pytest.param(GOOD_CONFIG, {"layers": [{"digest": digest(1), "size": 1.5}]}, id="float size"),
        pytest.param(GOOD_CONFIG, {"layers": [{"digest": "sha256:x", "size": 1}]}, id="bad digest"),
        pytest.param(GOOD_CONFIG, {"layers": ["x"]}, id="layer not an object"),
        pytest.param(GOOD_CONFIG, {"layers": []}, id="fewer layers than history"),
        pytest.param(
            {"history": [entry("COPY a b", empty=True)]}, GOOD_MANIFEST, id="more layers than history"
        ),
        pytest.param("x" * (5 * 1024 * 1024), GOOD_MANIFEST, id="huge"),
        pytest.param('{"a":' * 100_000, GOOD_MANIFEST, id="deep"),
        pytest.param(b"\xff\xfe", GOOD_MANIFEST, id="binary"),
    ],
)
def test_unusable_input_is_none(config: object, manifest: object) -> None:
    assert image_layers(config, manifest) is None


def test_the_good_pair_above_is_usable() -> None:
    assert image_layers(GOOD_CONFIG, GOOD_MANIFEST) is not None


def test_stage_input_that_is_not_instructions_is_ignored() -> None:
    stage: list[Any] = ["COPY a b", None, StageInstruction(1, "  ")]
    assert image_layers(GOOD_CONFIG, GOOD_MANIFEST, stage) == image_layers(GOOD_CONFIG, GOOD_MANIFEST)


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=5),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=4),
    max_leaves=20,
)


@given(
    st.fixed_dictionaries({"history": JSON, "created": JSON}),
    st.fixed_dictionaries({"layers": JSON}),
    st.lists(st.builds(StageInstruction, st.integers(), st.text(max_size=10)), max_size=3),
)
def test_any_structure_gives_none_or_layers(
    config: dict[str, Any], manifest: dict[str, Any], stage: list[StageInstruction]
) -> None:
    result = image_layers(config, manifest, stage)
    assert result is None or isinstance(result, ImageLayers)
