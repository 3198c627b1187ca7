"""We test these aspects:

- the real calc sample after a one-line edit of calc.c: the first miss in build order is the `COPY` of the
  sources (though the metrics list it last), and of the files it copies only calc.c changed;
- a changed build argument and a base image with a new digest are named; unchanged ones are not;
- without a previous build's digests there is no why, only the step;
- the context files a `COPY`/`ADD` step copies (the Dockerfile analysis's reading): flags skipped, JSON
  form, folders, wildcards and `--exclude`; a copy from a stage or a step that copies nothing has none;
- a context of more than MAX_TRACKED_FILES files keeps no file digests.
"""

from pathlib import Path

import pytest

from servicebuild.api.models import BaseImage, FirstMiss
from servicebuild.buildlog import parse_plain
from servicebuild.cachemetrics import parse_cache_metrics
from servicebuild.cachemiss import MAX_TRACKED_FILES, cache_inputs, explain
from servicebuild.dockerfile import copied_context_files
from servicebuild.report_budget import facts_from_build

SAMPLES = Path(__file__).parent / "buildkit_samples"
BUSYBOX = "registry.test:5000/library/busybox:latest"


def context(calc: str) -> dict[str, bytes]:
    return {
        "Dockerfile": (SAMPLES / "calc-Dockerfile").read_bytes(),
        "util.h": (SAMPLES / "calc-util.h").read_bytes()
        if (SAMPLES / "calc-util.h").exists()
        else b"int f();",
        "util.c": b"int f() { return 1; }",
        "calc.c": calc.encode(),
        "util_test.c": b"int main() {}",
    }


def test_calc_c_edited_names_the_copy_of_the_sources_and_calc_c() -> None:
    log = parse_plain((SAMPLES / "calc-calc-c-edited-plain.log").read_text())
    metrics = parse_cache_metrics((SAMPLES / "calc-calc-c-edited-cache-metrics.json").read_text())
    step = facts_from_build(log, metrics).first_miss
    assert metrics.misses[-1] == step == "[build 3/4] COPY util.h util.c calc.c ./"
    before = cache_inputs(context("return a + b;"), {"BASE_IMAGE": "busybox:stable"})
    after = cache_inputs(context("return a - b;"), {"BASE_IMAGE": "busybox:stable"})

    assert explain(step, before, after, (), ()) == FirstMiss(step=step, changed_files=["calc.c"])


def test_changed_build_args_and_base_images_are_named() -> None:
    step = "[runtime 2/2] COPY --from=build /calc /usr/local/bin/calc"
    before = cache_inputs(context("x"), {"VERSION": "1.4.1", "PORT": "80"})
    after = cache_inputs(context("y"), {"VERSION": "1.4.2", "PORT": "80", "NEW": "1"})
    old_bases = (BaseImage(ref=BUSYBOX, digest="sha256:" + "a" * 64), BaseImage(ref="b:1", digest="sha256:b"))
    new_bases = (BaseImage(ref=BUSYBOX, digest="sha256:" + "c" * 64), BaseImage(ref="b:1", digest="sha256:b"))

    explained = explain(step, before, after, old_bases, new_bases)

    assert explained == FirstMiss(
        step=step, changed_build_args=["NEW", "VERSION"], changed_base_images=[BUSYBOX]
    )


def test_without_a_previous_build_there_is_only_the_step() -> None:
    step = "[build 2/4] WORKDIR /src"
    assert explain(step, None, cache_inputs(context("x"), {}), (), ()) == FirstMiss(step=step)


@pytest.mark.parametrize(
    ("instruction", "copied"),
    [
        ("COPY util.h util.c calc.c ./", ["util.h", "util.c", "calc.c"]),
        ("COPY --chown=1000:1000 --link package*.json ./", ["package-lock.json", "package.json"]),
        ('ADD ["src/", "/app/"]', ["src/app.js"]),
        (
            "COPY --exclude=*.md . .",
            ["calc.c", "package-lock.json", "package.json", "src/app.js", "util.c", "util.h"],
        ),
        ("COPY --from=build /calc /usr/local/bin/calc", None),
        ("RUN gcc -o /calc calc.c", None),
    ],
)
def test_the_files_a_step_copies(instruction: str, copied: list[str] | None) -> None:
    context = ["README.md", "calc.c", "package-lock.json", "package.json", "src/app.js", "util.c", "util.h"]
    assert copied_context_files(instruction, context) == copied


@pytest.mark.parametrize(
    ("step", "changed"),
    [
        ("[2/3] COPY . .", ["package.json", "src/app.js"]),
        ("[2/3] COPY package*.json ./", ["package.json"]),
        ("[2/3] COPY src ./src", ["src/app.js"]),
        ("[2/3] COPY README.md ./", []),
    ],
)
def test_changed_files_are_those_the_step_copies(step: str, changed: list[str]) -> None:
    before = cache_inputs({"package.json": b"1", "src/app.js": b"a", "README.md": b"r"}, {})
    after = cache_inputs({"package.json": b"2", "src/app.js": b"b", "README.md": b"r"}, {})

    assert explain(step, before, after, (), ()).changed_files == (changed or None)


def test_a_large_context_keeps_no_file_digests() -> None:
    files = {f"f{index}": b"x" for index in range(MAX_TRACKED_FILES + 1)}
    assert cache_inputs(files, {}).files is None
    assert cache_inputs(dict(list(files.items())[:MAX_TRACKED_FILES]), {}).files is not None
