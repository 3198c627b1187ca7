"""Where an image's bytes are: its layers, the instruction that made each, base image against added.

Input: the pushed image's config and manifest (as the registry serves them, one platform at a time) and,
optionally, the target stage's instructions as the Dockerfile has them (`StageInstruction`: line and
text, FROM left out or not; the Dockerfile parser is another module's job).

- Layers: the config's `history` has one entry per instruction (and per base-image step); the entries
  without `empty_layer: true` are the layers, in the order of the manifest's `layers[]` (whose `size` is
  the compressed size the registry serves). When their counts differ the config is not usable: None.
- The instruction of a layer is its history entry's `created_by` without BuildKit's ` # buildkit`
  suffix. BuildKit writes only `COPY <sources> <dest>` there (`--from=`, `--chown`, `--link`… dropped),
  and `RUN |<n> <build args> <shell> -c <command>`, which records the values of the build args in
  scope. So, where the entries are matched to the target stage's instructions (below), a COPY or ADD
  gets the flags of its Dockerfile instruction back (`COPY --from=build /calc /usr/local/bin/calc`), a
  RUN is shown as the Dockerfile writes it (no build arg values), and each gets its Dockerfile line.
  An unmatched `RUN |<n> …` is shown as `RUN` alone: where its build args end cannot be told for sure
  (a value may hold spaces), and a value may be a secret.
- Base against added: BuildKit writes one history entry for every instruction of a stage, a layer or
  not (ARG, ENV, USER, CMD… as `empty_layer`), after the entries of the image the stage starts from. So
  the last N entries are the target stage's N instructions: they are matched when their instruction
  words agree in order (`COPY`, `USER`, `ENTRYPOINT`), and every layer before them is the base image's
  (`baseBytes`), every layer of them added (`addedBytes`). A stage `FROM <other stage>` counts that
  stage's layers as its base. Without instructions, or when the words disagree (ONBUILD triggers of the
  base image, a Dockerfile that changed), the stage's entries are taken to be the trailing ones created
  at the image's own `created` time, when some earlier entry was created at another time; otherwise the
  split is unknown (None).

Pure and total: any input gives None or an answer, never an exception.
"""

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

BUILDKIT_SUFFIX = " # buildkit"
LARGEST_LAYERS = 5
_RUN_ARGS_RE = re.compile(r"RUN \|\d+ ")
_DIGEST_RE = re.compile(r"sha256:[0-9a-f]{64}")
_MAX_DOCUMENT = 4 * 1024 * 1024


@dataclass(frozen=True)
class StageInstruction:
    """One instruction of the target stage as the Dockerfile writes it: where, and what."""

    line: int
    """The Dockerfile line it starts on (from 1)."""
    text: str
    """The instruction with its flags and arguments, continuation lines joined:
    `COPY --from=build /calc /usr/local/bin/calc`."""

    @property
    def keyword(self) -> str:
        return _keyword(self.text)


@dataclass(frozen=True)
class Layer:
    """One layer of the image."""

    index: int
    """Its position in the manifest's `layers[]` (from 0, the bottom layer)."""
    digest: str
    size_bytes: int
    """Compressed, as the registry serves it."""
    instruction: str | None
    """What made it: `COPY --from=build /calc /usr/local/bin/calc`, or the base image's own words
    (`base layer (made without a Dockerfile)`); None when the history says nothing."""
    line: int | None
    """The target stage's Dockerfile line that made it, when the history was matched to the stage."""
    base: bool | None
    """Whether it belongs to the image the target stage starts from; None when that is unknown."""


@dataclass(frozen=True)
class ImageLayers:
    """The layers of one platform's image and where its bytes are."""

    layers: tuple[Layer, ...]
    base_bytes: int | None
    """The layers of the target stage's base image; None when base and added layers cannot be told apart."""
    added_bytes: int | None
    """The layers the target stage added; None when unknown."""
    matched: bool
    """Whether the history was matched to the target stage's instructions (so lines and flags are known)."""

    def largest(self, count: int = LARGEST_LAYERS) -> tuple[Layer, ...]:
        """The `count` largest layers, largest first (the lower layer first among equals)."""
        return tuple(sorted(self.layers, key=lambda layer: (-layer.size_bytes, layer.index))[: max(count, 0)])


def image_layers(
    config: object, manifest: object, target_stage: Sequence[StageInstruction] = ()
) -> ImageLayers | None:
    """The layers of an image from its config and manifest (dicts, or JSON text); None when unusable."""
    config_doc, manifest_doc = _document(config), _document(manifest)
    history = _history(config_doc.get("history"))
    sizes = _layer_sizes(manifest_doc.get("layers"))
    if history is None or sizes is None:
        return None
    layer_entries = [index for index, entry in enumerate(history) if entry.get("empty_layer") is not True]
    if len(layer_entries) != len(sizes):
        return None
    instructions = [
        step
        for step in target_stage
        if isinstance(step, StageInstruction) and step.keyword and step.keyword != "FROM"
    ]
    split, matched = _stage_start(history, instructions), True
    if split is None:
        split, matched = _stage_start_by_time(history, config_doc.get("created")), False
    layers = []
    for position, (entry_index, (digest, size)) in enumerate(zip(layer_entries, sizes, strict=True)):
        entry = history[entry_index]
        instruction, line = _created_by(entry), None
        if matched and split is not None and entry_index >= split:
            source = instructions[entry_index - split]
            instruction, line = _restore(instruction, source), source.line
        layers.append(
            Layer(
                index=position,
                digest=digest,
                size_bytes=size,
                instruction=instruction,
                line=line,
                base=None if split is None else entry_index < split,
            )
        )
    base_bytes = added_bytes = None
    if split is not None:
        base_bytes = sum(layer.size_bytes for layer in layers if layer.base)
        added_bytes = sum(layer.size_bytes for layer in layers if not layer.base)
    return ImageLayers(tuple(layers), base_bytes, added_bytes, matched and split is not None)


def _stage_start(history: list[Mapping[str, Any]], instructions: list[StageInstruction]) -> int | None:
    """Where the target stage's entries begin, when the last entries' words are its instructions'."""
    if not instructions or len(instructions) > len(history):
        return None
    start = len(history) - len(instructions)
    words = [_keyword(_created_by(entry) or "") for entry in history[start:]]
    if words != [step.keyword for step in instructions]:
        return None
    return start


def _stage_start_by_time(history: list[Mapping[str, Any]], created: object) -> int | None:
    """The first of the trailing entries created when the image was, if some entry before them was not."""
    if not isinstance(created, str) or not created:
        return None
    start = len(history)
    while start > 0 and history[start - 1].get("created") == created:
        start -= 1
    return start if 0 < start < len(history) else None


def _restore(instruction: str | None, source: StageInstruction) -> str | None:
    """The history's words with what BuildKit left out put back from the Dockerfile."""
    keyword = source.keyword
    if keyword == "RUN":
        return source.text.strip()
    if keyword in {"COPY", "ADD"} and instruction is not None:
        flags = [word for word in source.text.split()[1:] if word.startswith("--")]
        recorded = instruction.split(maxsplit=1)
        if flags and len(recorded) == 2 and not recorded[1].startswith("--"):
            return " ".join([recorded[0], *flags, recorded[1]])
    return instruction


def _created_by(entry: Mapping[str, Any]) -> str | None:
    text = entry.get("created_by")
    if not isinstance(text, str) or not text.strip():
        return None
    text = text.removesuffix(BUILDKIT_SUFFIX).strip()
    if _RUN_ARGS_RE.match(text):  # `RUN |1 API_TOKEN=… /bin/sh -c …`: the values may be secrets
        return "RUN"
    return text


def _keyword(text: str) -> str:
    words = text.split(maxsplit=1)
    return words[0].upper() if words else ""


def _history(value: object) -> list[Mapping[str, Any]] | None:
    if not isinstance(value, list) or not all(isinstance(entry, Mapping) for entry in value):
        return None
    return list(value)


def _layer_sizes(value: object) -> list[tuple[str, int]] | None:
    if not isinstance(value, list):
        return None
    sizes = []
    for layer in value:
        if not isinstance(layer, Mapping):
            return None
        digest, size = layer.get("digest"), layer.get("size")
        if not isinstance(digest, str) or not _DIGEST_RE.fullmatch(digest):
            return None
        if not isinstance(size, int) or isinstance(size, bool) or size < 0:
            return None
        sizes.append((digest, size))
    return sizes


def _document(value: object) -> Mapping[str, Any]:
    if isinstance(value, bytes | bytearray):
        value = bytes(value).decode("utf-8", errors="replace")
    if isinstance(value, str):
        if len(value) > _MAX_DOCUMENT:
            return {}
        try:
            value = json.loads(value)
        except (ValueError, RecursionError):
            return {}
    return value if isinstance(value, Mapping) else {}
