"""We test these aspects:

- a ConfigMap's keys are the context's files, `binaryData` decoded;
- an archive's regular files are the context, `./` cut; an archive that is not one, or unpacks to more
  than the limit, is unreadable (None);
- the file digests tell a changed file from an unchanged one.
"""

import base64

from servicebuild.buildcontext import MAX_UNPACKED_BYTES, context_files, file_digests
from support.archives import tar_gz


def test_configmap_keys_are_the_files() -> None:
    files = context_files(
        {"Dockerfile": "FROM scratch\n"}, {"logo.png": base64.b64encode(b"\x89PNG").decode()}, None
    )

    assert files == {"Dockerfile": b"FROM scratch\n", "logo.png": b"\x89PNG"}


def test_an_archives_regular_files_are_the_files() -> None:
    packed = tar_gz({"./Dockerfile": b"FROM scratch\n", "./src/main.c": b"int main(){}"}, folders=("./lib",))

    files = context_files({}, {"context.tar.gz": packed}, "context.tar.gz")

    assert files == {"Dockerfile": b"FROM scratch\n", "src/main.c": b"int main(){}"}  # the folder is no file


def test_an_unreadable_or_oversized_archive_is_none() -> None:
    assert context_files({}, {"c.tgz": base64.b64encode(b"not gzip").decode()}, "c.tgz") is None
    assert context_files({}, {"c.tgz": "***"}, "c.tgz") is None
    bomb = tar_gz({"zeros": bytes(MAX_UNPACKED_BYTES + 1)})  # compresses to a few KiB
    assert len(bomb) < 100_000
    assert context_files({}, {"c.tgz": bomb}, "c.tgz") is None


def test_file_digests_tell_a_change() -> None:
    before = file_digests({"calc.c": b"return a + b;", "util.c": b"x"})
    after = file_digests({"calc.c": b"return a - b;", "util.c": b"x"})

    assert before["util.c"] == after["util.c"]
    assert before["calc.c"] != after["calc.c"]
    assert len(before["calc.c"]) == 16
