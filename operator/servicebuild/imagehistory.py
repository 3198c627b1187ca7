"""Where an image's bytes are: each layer's size and the instruction that made it, split into the target
stage's base image and what the target stage added; pure.

The image config's `history` has one entry per instruction of every stage the image is made of, base
image included; entries with `empty_layer` made no layer, the others map in order onto the manifest's
`layers`. BuildKit writes the instruction into `created_by`, but not as written: `COPY --from=build /calc
/usr/local/bin/calc` becomes `COPY /calc /usr/local/bin/calc # buildkit`, and `RUN` gains the build
arguments in scope (`RUN |1 API_TOKEN=… /bin/sh -c …`). The target stage's own instructions (all but its
`FROM`) are the last entries of the history, one each. When they are known and the last entries agree
with them instruction by instruction, those entries get the text as written and everything before them is
the base image; otherwise the split is unknown and the layers keep BuildKit's text, build arguments cut.

`target_instructions` reads them with the Dockerfile analysis's parser (`servicebuild.dockerfile`).
"""

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from servicebuild.dockerfile import DockerfileError, parse_dockerfile

LARGEST_LAYERS = 5
MAX_INSTRUCTION = 200
"""Characters of an instruction kept in the status; a longer one is cut with `…`."""
_BUILDKIT_SUFFIX = " # buildkit"
_SHELL_PREFIX = "/bin/sh -c "
_NOP = "#(nop) "
_RUN_ARGS_RE = re.compile(r"^RUN \|(\d+) ")


class InvalidImage(ValueError):  # noqa: N818 - named as the registry gateway's error it becomes
    """The config's history and the manifest's layers do not describe the same image."""


@dataclass(frozen=True)
class Layer:
    size_bytes: int
    instruction: str
    """The instruction that made the layer, as the Dockerfile has it when known."""


@dataclass(frozen=True)
class LayerBreakdown:
    """An image's layers; `base_bytes` and `added_bytes` are None when the split is unknown."""

    layers: tuple[Layer, ...]
    base_bytes: int | None
    added_bytes: int | None

    @property
    def largest(self) -> tuple[Layer, ...]:
        """The largest layers, at most five, largest first (earlier first among equals)."""
        return tuple(sorted(self.layers, key=lambda layer: -layer.size_bytes)[:LARGEST_LAYERS])


def breakdown(
    config: Mapping[str, Any], manifest: Mapping[str, Any], instructions: Sequence[str] | None = None
) -> LayerBreakdown:
    """The layers of the image `manifest` describes, named from its `config`'s history and, when given, the
    target stage's `instructions` (without its `FROM`)."""
    sizes = _layer_sizes(manifest)
    history = _history(config)
    made_layer = [not entry.get("empty_layer", False) for entry in history]
    if sum(made_layer) != len(sizes):
        raise InvalidImage(
            f"the image config's history names {sum(made_layer)} layers and the manifest has {len(sizes)}"
        )
    texts = [_cleaned(str(entry.get("created_by") or "")) for entry in history]
    own = len(instructions) if instructions is not None else None
    matched = own is not None and own <= len(texts) and _agree(texts[len(texts) - own :], instructions or ())
    if matched and own:
        texts[len(texts) - own :] = [_shortened(text) for text in instructions or ()]
    layers, base_bytes = [], 0
    sizes_left = iter(sizes)
    for index, (text, layered) in enumerate(zip(texts, made_layer, strict=True)):
        if not layered:
            continue
        size = next(sizes_left)
        layers.append(Layer(size, text))
        if own is not None and index < len(texts) - own:
            base_bytes += size
    if not matched:
        return LayerBreakdown(tuple(layers), None, None)
    return LayerBreakdown(tuple(layers), base_bytes, sum(sizes) - base_bytes)


def _layer_sizes(manifest: Mapping[str, Any]) -> list[int]:
    layers = manifest.get("layers")
    if not isinstance(layers, list):
        raise InvalidImage("the manifest has no layers")
    sizes = [layer.get("size") if isinstance(layer, Mapping) else None for layer in layers]
    if not all(isinstance(size, int) and not isinstance(size, bool) and size >= 0 for size in sizes):
        raise InvalidImage("the manifest has a layer size that is not a byte count")
    return [size for size in sizes if isinstance(size, int)]


def _history(config: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    history = config.get("history")
    if not isinstance(history, list) or not all(isinstance(entry, Mapping) for entry in history):
        raise InvalidImage("the image config has no history")
    return history


def _keyword(instruction: str) -> str:
    return instruction.split(maxsplit=1)[0].upper() if instruction.strip() else ""


def _agree(history: Sequence[str], instructions: Sequence[str]) -> bool:
    return all(
        _keyword(made) == _keyword(written) for made, written in zip(history, instructions, strict=True)
    )


def _cleaned(created_by: str) -> str:
    """BuildKit's (or the classic builder's) `created_by` as an instruction, without build argument values."""
    text = created_by.removesuffix(_BUILDKIT_SUFFIX)
    if text.startswith(_SHELL_PREFIX):
        command = text.removeprefix(_SHELL_PREFIX)
        text = command.removeprefix(_NOP).strip() if command.startswith(_NOP) else f"RUN {command}"
    if match := _RUN_ARGS_RE.match(text):
        # `RUN |<n> NAME=value … <command>`: the values are the build's, not the instruction's.
        words = text[match.end() :].split(" ")
        text = "RUN " + " ".join(words[int(match.group(1)) :]).removeprefix(_SHELL_PREFIX)
    return _shortened(text)


def _shortened(text: str) -> str:
    return text if len(text) <= MAX_INSTRUCTION else text[: MAX_INSTRUCTION - 1] + "…"


def target_instructions(
    dockerfile: str, target: str | None = None, build_args: Mapping[str, str] | None = None
) -> list[str] | None:
    """The instructions of the `target` stage (default: the last) after its `FROM`, one line each, runs of
    blanks as one (a continued line's indent is no part of what the status shows); None when BuildKit
    would refuse the Dockerfile or it has no such stage."""
    try:
        stage = parse_dockerfile(dockerfile, build_args).target(target)
    except DockerfileError:
        return None
    return [" ".join(instruction.original.split()) for instruction in stage.instructions]
