"""One budget for the build container's termination message: the report first, then build facts.

The build Job's wrapper script (`WRAPPER_SCRIPT`) writes it, the operator reads it (`parse_message`).
The termination message holds at most 4096 bytes. Besides the report (digest, image names, cache
figures) the operator wants the base images BuildKit resolved, the first cache miss and the build checks'
warnings, and a Dockerfile can raise any number of warnings. The design:

1. **What the shell can do.** The wrapper is POSIX sh in the BuildKit image (busybox: sed, awk, tee, wc;
   no jq, no python). It keeps a copy of the plain progress log with `tee` (the container log still gets
   every line, live), and after a successful build one awk program takes from that copy and the cache
   metrics file the *build facts*, one line each, in a fixed priority:

       base <the FROM step, as BuildKit named it>   e.g. base [build 1/4] FROM reg/builder:bookworm@sha256:…
       miss <the first cache miss, in build order>  e.g. miss [build 3/4] COPY util.h util.c calc.c ./
       warn <the warning, as BuildKit wrote it>     e.g. warn FromAsCasing: 'as' and 'FROM' … (line 1)

   The first miss is the first step, in the order the log shows them, that the cache metrics list as
   missed (the metrics' own order is random: `cachemetrics`); without a metrics file, the first of the
   user's steps that is not `FROM` and not `CACHED`. Raw lines, not JSON: sh cannot escape JSON safely,
   and the operator parses the same words with `buildlog` either way.
2. **The message.** Line 1 is the JSON report exactly as `report.parse_report` reads it (image names now
   cut at 1024 bytes, was 2800, so that at least ~1800 bytes stay for facts; the cache metrics line stays
   at most 1024). Then as many whole fact lines as fit, in priority order, stopping at the first that
   does not: what the message carries is always a prefix of the facts, never a cut line. If anything was
   left out, a last line counts it — `truncated base=<n> miss=<n> warn=<n>` — and 64 bytes are kept for
   it. So the digest and the cache figures always arrive; base images, then the first miss, then the
   warnings as far as they fit.
3. **The rest, from the log.** The wrapper also prints every fact, uncut, as the last lines of the
   container log: `servicebuild-facts <n> <bytes>`, then the n fact lines (that many bytes, so a cut
   block is noticed). When the message says `truncated`, the operator reads the end of the build
   container's log — `kubectl logs <pod> -c buildkit --tail=<BuildFacts.log_lines>`, i.e.
   `read_namespaced_pod_log(..., container="buildkit", tail_lines=…)` — and `merge_facts` takes the
   log's facts when the message's are a prefix of them.
   Reading the end is cheap and survives log rotation (the kubelet drops the oldest part of a long log);
   if the Pod or its log is gone, the message's facts stay, marked truncated.

A failed build writes neither facts nor report: the log tail that Kubernetes puts in the message
(`FallbackToLogsOnError`) must end with BuildKit's error for `failures.classify`.

Reading the log needs `get` on `pods/log` in the operator's RBAC; buildctl's stdout reaches the container
log on stderr, next to its progress.

Pure and total: any text gives an answer or None, never an exception.
"""

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass

from servicebuild.buildlog import BaseImage, BuildLog, BuildWarning, parse_base_image, parse_warning
from servicebuild.cachemetrics import CacheMetrics
from servicebuild.report import MAX_MESSAGE_BYTES, BuildReport, parse_report

TRAILER_RESERVE = 64
"""Bytes kept free for the `truncated …` line."""
FACTS_MARKER = "servicebuild-facts"
"""Opens the block of facts at the end of the container log: `servicebuild-facts <lines> <bytes>`, the
size of the fact lines that follow, so that a block cut short is noticed."""
MAX_REPORTED_NAME = 1024
"""The image names the wrapper reports in the JSON line, at most; longer lists are left out (empty)."""
BASE, MISS, WARN, TRUNCATED = "base", "miss", "warn", "truncated"
_KINDS = (BASE, MISS, WARN)


@dataclass(frozen=True)
class Omitted:
    """How many fact lines of each kind the message left out."""

    base: int = 0
    miss: int = 0
    warn: int = 0

    @property
    def total(self) -> int:
        return self.base + self.miss + self.warn


@dataclass(frozen=True)
class BuildFacts:
    """What the build said beyond the report, in priority order; `omitted` when some did not fit."""

    base_images: tuple[BaseImage, ...] = ()
    first_miss: str | None = None
    warnings: tuple[BuildWarning, ...] = ()
    omitted: Omitted | None = None

    @property
    def truncated(self) -> bool:
        """Whether some facts are only in the build Pod's log."""
        return self.omitted is not None and self.omitted.total > 0

    @property
    def log_lines(self) -> int:
        """How many lines to read from the end of the build container's log to get every fact."""
        omitted = self.omitted.total if self.omitted else 0
        return 1 + len(self.lines()) + omitted

    def lines(self) -> tuple[str, ...]:
        """The fact lines, in priority order, as the wrapper writes them."""
        return (
            *(f"{BASE} {image.step}" for image in self.base_images),
            *((f"{MISS} {self.first_miss}",) if self.first_miss else ()),
            *(f"{WARN} {warning.short}" for warning in self.warnings),
        )


@dataclass(frozen=True)
class BuildMessage:
    """A successful build's termination message: the report and the facts that fitted."""

    report: BuildReport
    facts: BuildFacts


def facts_from_build(log: BuildLog, metrics: CacheMetrics | None = None) -> BuildFacts:
    """The facts of a whole build log (and its cache metrics), as `WRAPPER_SCRIPT` takes them."""
    if metrics is not None and metrics.summary is not None:
        missed = set(metrics.misses)
        first_miss = next((name for name in log.build_order if name in missed), None)
    else:
        step = log.first_uncached
        first_miss = step.name if step else None
    return BuildFacts(
        base_images=tuple({image.step: image for image in log.base_images}.values()),
        first_miss=first_miss,
        warnings=log.warnings,
    )


def encode_message(report_line: str, facts: BuildFacts, limit: int = MAX_MESSAGE_BYTES) -> str:
    """The termination message the wrapper writes: the report line, then the facts that fit."""
    room = limit - TRAILER_RESERVE - _size(report_line) - 1
    kept, left, full = [report_line], Counter[str](), False
    for line in facts.lines():
        size = _size(line) + 1
        if not full and size <= room:
            kept.append(line)
            room -= size
            continue
        full = True
        left[line.split(" ", 1)[0]] += 1
    if full:
        kept.append(f"{TRUNCATED} base={left[BASE]} miss={left[MISS]} warn={left[WARN]}")
    return "".join(f"{line}\n" for line in kept)


def parse_message(message: str | None) -> BuildMessage | None:
    """The report and facts of a termination message; None when there is no report (a failure's log
    tail, garbage). A report without facts (today's wrapper) has empty facts."""
    if not message or _size(message) > MAX_MESSAGE_BYTES:
        return None
    first, _, rest = message.lstrip().partition("\n")
    report = parse_report(first)
    if report is None:
        return None
    return BuildMessage(report=report, facts=_facts(rest.split("\n")))


def parse_log_facts(log: str | None) -> BuildFacts | None:
    """The facts the wrapper printed at the end of the container log (complete, never `truncated`);
    None when the log has no whole block of them."""
    if not log:
        return None
    lines = [line.rstrip("\r") for line in log.split("\n")]
    for index in range(len(lines) - 1, -1, -1):
        word, *counts = lines[index].split(" ")
        if word != FACTS_MARKER:
            continue
        if len(counts) != 2 or not all(count.isdigit() and len(count) < 10 for count in counts):
            return None
        count, size = int(counts[0]), int(counts[1])
        block = lines[index + 1 : index + 1 + count]
        if len(block) != count or sum(_size(line) + 1 for line in block) != size:
            return None  # cut
        facts = _facts(block)
        return facts if len(facts.lines()) == count else None
    return None


def merge_facts(message: BuildFacts, log: BuildFacts | None) -> BuildFacts:
    """The complete facts: the log's when the message was truncated and the log's facts begin with the
    message's and have as many more as the message says it left out; otherwise the message's."""
    if not message.truncated or message.omitted is None or log is None or log.truncated:
        return message
    kept, complete = message.lines(), log.lines()
    if complete[: len(kept)] != kept or len(complete) != len(kept) + message.omitted.total:
        return message
    return log


def _size(text: str) -> int:
    """Bytes of `text` in UTF-8 (a lone surrogate, which no shell writes, counts as one)."""
    return len(text.encode(errors="replace"))


def _facts(lines: Iterable[str]) -> BuildFacts:
    bases: list[BaseImage] = []
    warnings: list[BuildWarning] = []
    first_miss: str | None = None
    omitted: Omitted | None = None
    for raw in lines:
        kind, _, text = raw.rstrip("\r").partition(" ")
        if kind == BASE and (image := parse_base_image(text)) is not None:
            bases.append(image)
        elif kind == MISS and text.strip() and first_miss is None:
            first_miss = text
        elif kind == WARN and (warning := parse_warning(text)) is not None:
            warnings.append(warning)
        elif kind == TRUNCATED:
            omitted = _omitted(text)
    return BuildFacts(tuple(bases), first_miss, tuple(warnings), omitted)


def _omitted(text: str) -> Omitted | None:
    counts: dict[str, int] = {}
    for part in text.split():
        key, _, value = part.partition("=")
        if key not in _KINDS or not value.isdigit() or len(value) > 9:
            return None
        counts[key] = int(value)
    return Omitted(**counts) if counts else None


FACTS_AWK = r"""
BEGIN {
  file = ENVIRON["BUILD_CACHE_METRICS_FILE"]
  while (file != "" && (getline line < file) > 0) {
    if (substr(line, 1, 12) == "cache miss: ") missed[substr(line, 13)] = 1
    else if (line ~ /^[{].*[}]$/) metrics = 1
  }
}
/^#[0-9]+ / {
  id = substr($1, 2)
  text = substr($0, length($1) + 2)
  sub(/\r$/, "", text)
  if (!(id in name)) { name[id] = text; order[++steps] = id; next }
  if (text == "CACHED") cached[id] = 1
  else if (substr(text, 1, 6) == "WARN: ") warning[++warnings] = substr(text, 7)
}
END {
  for (i = 1; i <= steps; i++) {
    step = name[order[i]]
    at = index(step, "@sha256:")
    if (step ~ /^(\[[^]]*\] )?FROM [^ ]+@sha256:[0-9a-f]+$/ && length(step) - at == 71 && !(step in based)) {
      based[step] = 1
      print "base " step
    }
  }
  for (i = 1; i <= steps; i++) {
    id = order[i]
    step = name[id]
    if (metrics) miss = (step in missed)
    else miss = (step !~ /^(\[internal\]|\[auth\]|importing cache|exporting )/ &&
      step !~ /^\[.*\] FROM/ && !(id in cached))
    if (miss) { print "miss " step; break }
  }
  for (i = 1; i <= warnings; i++) print "warn " warning[i]
}
"""
"""Build facts from the plain log (`$1`) and the cache metrics file (`$BUILD_CACHE_METRICS_FILE`), in
priority order; `facts_from_build` is the same in Python. Run with LC_ALL=C: sizes are bytes."""

BUDGET_AWK = r"""
{
  size = length($0) + 1
  if (!full && size <= room) { print; room -= size; next }
  full = 1
  left[$1]++
}
END { if (full) printf "truncated base=%d miss=%d warn=%d\n", left["base"], left["miss"], left["warn"] }
"""
"""The fact lines (stdin) that fit in `room` bytes, stopping at the first that does not, and the count
of the rest; `encode_message` is the same in Python."""

WRAPPER_SCRIPT = (
    r"""set -u
# Build and push; the progress log goes to the container log as before (on stderr) and to a copy the
# build facts are read from. A failure keeps its exit code and writes no report and no facts: Kubernetes
# then puts the log tail (FallbackToLogsOnError) into the termination message.
log=${BUILD_LOG_FILE:-/tmp/build-progress.log}
{ buildctl-daemonless.sh "$@" 2>&1; echo "$?" >"$log.status"; } | tee "$log" >&2
status=$(cat "$log.status" 2>/dev/null) || status=1
[ "${status:-1}" = 0 ] || exit "${status:-1}"
# Success: line 1 of the message is the JSON report (pushed digest, image names, buildctl's cache
# metrics line, whether the registry cache was exported).
digest=$(sed -n 's/^ *"containerimage\.digest": *"\([^"]*\)".*/\1/p' "$BUILD_METADATA_FILE")
name=$(sed -n 's/^ *"image\.name": *"\([^"]*\)".*/\1/p' "$BUILD_METADATA_FILE")
[ "${#name}" -le @MAX_NAME@ ] || name=
metrics=$(tail -n 1 "$BUILD_CACHE_METRICS_FILE" 2>/dev/null)
case $metrics in "{"*"}") ;; *) metrics=null ;; esac
[ "${#metrics}" -le 1024 ] || metrics=null
exported=null
if [ "${BUILD_CACHE_EXPORT:-false}" = true ]; then
  exported=false
  [ -z "$(sed -n '/^ *"cache\.manifest":/p' "$BUILD_METADATA_FILE")" ] || exported=true
fi
printf '{"digest":"%s","imageName":"%s","cacheMetrics":%s,"cacheExported":%s}\n' \
  "$digest" "$name" "$metrics" "$exported" >"$BUILD_REPORT_FILE"
# Then the build facts (base images, first cache miss, warnings) that fit, and all of them at the end of
# the container log for the operator to read when the message says some were left out.
LC_ALL=C awk '@FACTS_AWK@' "$log" >"$log.facts" 2>/dev/null || : >"$log.facts"
room=$((@ROOM@ - $(wc -c <"$BUILD_REPORT_FILE")))
LC_ALL=C awk -v room="$room" '@BUDGET_AWK@' "$log.facts" >>"$BUILD_REPORT_FILE"
{ echo @MARKER@ "$(($(wc -l <"$log.facts")))" "$(($(wc -c <"$log.facts")))"; cat "$log.facts"; } >&2
""".replace("@MAX_NAME@", str(MAX_REPORTED_NAME))
    .replace("@FACTS_AWK@", FACTS_AWK)
    .replace("@ROOM@", str(MAX_MESSAGE_BYTES - TRAILER_RESERVE))
    .replace("@BUDGET_AWK@", BUDGET_AWK)
    .replace("@MARKER@", FACTS_MARKER)
)
"""The build container's shell: buildctl's arguments as `$@`, the files in `BUILD_METADATA_FILE`,
`BUILD_CACHE_METRICS_FILE` and `BUILD_REPORT_FILE`, an optional `BUILD_LOG_FILE` (default
`/tmp/build-progress.log`). Needs `tee`, `awk`, `wc`, `sed` and `tail`: busybox applets in the BuildKit
image."""
