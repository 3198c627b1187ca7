"""We test these aspects:

- `.dockerignore` files are read as moby/patternmatcher's `ignorefile.ReadAll` reads them: comments
  only at the start of a line, whitespace trimmed (after `!` too), paths cleaned, a leading `/` dropped,
  a byte-order mark ignored (cases from its own test);
- patterns match as BuildKit matches them: anchored at the context root, a directory takes what is
  below it, `*` and `?` stop at `/`, `**` spans any number of directories (none included), classes and
  escapes, the last matching pattern wins, so `!` re-includes a file inside an excluded directory;
- patternmatcher's match-type shortcuts (`**/x`, `x/**`, `**x`) answer as in Go, where a regular
  expression would differ;
- malformed patterns raise ValueError, as they fail the build;
- the project's own allow-list `.dockerignore` keeps what the operator image needs and nothing else.
"""

from pathlib import Path

import pytest

from servicebuild.dockerfile.ignore import IgnoreMatcher, read_patterns

REPO = Path(__file__).resolve().parents[2]


def test_read_patterns_as_ignorefile_reads_them() -> None:
    content = "test1\n/test2\n/a/file/here\n\nlastfile\n# this is a comment\n! /inverted/abs/path\n!\n! "
    assert read_patterns(content) == [
        "test1",
        "test2",
        "a/file/here",
        "lastfile",
        "!inverted/abs/path",
        "!",
        "!",
    ]


def test_read_patterns_cleans_paths_and_keeps_indented_hashes() -> None:
    content = "\ufeff./build/../dist/\r\n  # not a comment\n//twice//slashed/\n#comment\n"
    assert read_patterns(content) == ["dist", "# not a comment", "twice/slashed"]


CASES = [
    # (what the case shows, .dockerignore, path, excluded)
    ("a name without a slash is anchored at the root", "*.pem", "key.pem", True),
    ("… so it misses the same name deeper down", "*.pem", "certs/key.pem", False),
    ("`**/` reaches any depth", "**/*.pem", "certs/deep/key.pem", True),
    ("`**/` includes zero directories", "**/*.pem", "key.pem", True),
    ("`**/.env*` catches nested env files", "**/.env*", "config/.env.local", True),
    ("a directory pattern takes its contents", "secrets/", "secrets/db/password.txt", True),
    ("a leading slash is the root", "/secrets", "secrets/a", True),
    ("a directory name is anchored too", "node_modules", "web/node_modules/x.js", False),
    (
        "`!` re-includes a file inside an excluded directory",
        "secrets\n!secrets/public.pem",
        "secrets/public.pem",
        False,
    ),
    (
        "the excluded directory's other files stay out",
        "secrets\n!secrets/public.pem",
        "secrets/private.pem",
        True,
    ),
    ("an allow-list keeps what it names", "*\n!src\n!go.mod", "src/main.go", False),
    ("an allow-list drops the rest", "*\n!src\n!go.mod", ".env", True),
    ("an allow-list can exclude again below", "*\n!src/\nsrc/**/*.pem", "src/tls/key.pem", True),
    ("the last matching pattern wins", "!.env\n.env", ".env", True),
    ("`a/**/b` spans directories", "a/**/b", "a/x/y/b", True),
    ("`a/**/b` spans none", "a/**/b", "a/b", True),
    ("`docs/**` takes everything below docs", "docs/**", "docs/a/b.md", True),
    ("`?` is one character", "id_rsa?", "id_rsa2", True),
    ("`?` is not a slash", "a?b", "a/b", False),
    ("a character class", "key[0-9].pem", "key5.pem", True),
    ("a negated character class", "key[^0-9].pem", "key5.pem", False),
    ("an indented `#` is a pattern", " # not a comment", "# not a comment", True),
    ("a `#` line is a comment", "# .env", ".env", False),
    ("trailing spaces are trimmed", ".env   ", ".env", True),
    ("spaces after `!` are trimmed", "*\n! go.mod", "go.mod", False),
    ("`./` is cleaned away", "./.env", ".env", True),
    ("`*` stops at a slash", "*/*.key", "a/b/c.key", False),
    ("`*/` is one directory", "*/*.key", "a/c.key", True),
    ("an escaped `*` is literal", "\\*.txt", "*.txt", True),
    ("… and matches only itself", "\\*.txt", "a.txt", False),
    ("a dot is literal", "a.b", "axb", False),
    ("`**x` is a suffix match in patternmatcher", "**.env", "x/prod.env", True),
    ("`**` alone takes everything", "**", "a/b/c", True),
    ("nothing excludes the context root", "*", ".", False),
]


@pytest.mark.parametrize(
    ("dockerignore", "path", "excluded"), [case[1:] for case in CASES], ids=[c[0] for c in CASES]
)
def test_patterns_match_as_buildkit_matches_them(dockerignore: str, path: str, excluded: bool) -> None:
    assert IgnoreMatcher.from_text(dockerignore).excludes(path) is excluded


@pytest.mark.parametrize("pattern", ["[a", "a\\", "!", "[]a]", "[a-]", "x[-a]"])
def test_malformed_patterns_raise(pattern: str) -> None:
    with pytest.raises(ValueError, match="pattern"):
        IgnoreMatcher.from_text(pattern)


def test_the_projects_own_dockerignore_keeps_only_what_the_image_needs() -> None:
    matcher = IgnoreMatcher.from_text((REPO / ".dockerignore").read_text())
    kept = ["pyproject.toml", "README.md", "operator/servicebuild/reconciler.py"]
    dropped = [
        ".git/config",
        ".venv/bin/python",
        "tests/unit/test_dockerignore.py",
        "operator/servicebuild/__pycache__/reconciler.cpython-311.pyc",
        "operator/servicebuild_operator.egg-info/PKG-INFO",
        "Dockerfile",
    ]
    assert [path for path in kept if matcher.excludes(path)] == []
    assert [path for path in dropped if not matcher.excludes(path)] == []
