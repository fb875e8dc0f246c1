"""The run directory's one storage helper (search/rundir.py): `file://` and plain paths name the same place for the
checkpoint store and the actors' outputs alike, and every file is written atomically."""
import os

import pytest

from efficientllava.actors import storage
from efficientllava.search.checkpoint import RunStore
from efficientllava.search.rundir import RunDir, absolute, is_uri


def test_file_uris_and_plain_paths_normalise_to_one_absolute_path(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    plain = str(tmp_path / "run")
    for spelling in (plain, f"file://{plain}", "run", "file://run", "./run/"):
        assert absolute(spelling) == plain, spelling
        assert not is_uri(spelling)
        assert RunDir(spelling).root == plain and RunStore(spelling).root == plain
    assert is_uri("s3://bucket/run") and absolute("s3://bucket/run") == "s3://bucket/run"


@pytest.mark.parametrize("spelling", ["plain", "file", "relative", "relative-file"])
def test_checkpoint_store_and_actor_outputs_agree_on_the_directory(tmp_path, monkeypatch, spelling):
    monkeypatch.chdir(tmp_path)
    location = {"plain": str(tmp_path / "run"), "file": f"file://{tmp_path / 'run'}", "relative": "run",
                "relative-file": "file://run"}[spelling]
    storage.write_file(location, "a.txt", b"from the actors")
    RunStore(location).write("b.txt", b"from the store")
    assert sorted(os.listdir(tmp_path / "run")) == ["a.txt", "b.txt"]
    assert RunStore(location).read("a.txt") == b"from the actors"
    assert storage.read_file(location, "b.txt") == b"from the store"
    assert storage.exists(location, "a.txt") and RunStore(location).is_file("b.txt")
    assert not storage.exists(location, "c.txt")


def test_a_write_is_atomic_and_leaves_no_temporary_file(tmp_path):
    run = RunDir(str(tmp_path / "run"))
    run.write("state.json", b"old")
    run.write("state.json", b"new")
    assert run.names() == ["state.json"] and run.read("state.json") == b"new"

    class Crashing(RunDir):
        def _move(self, src, dst):
            raise KeyboardInterrupt  # dies after the temporary file is written, before the rename

    with pytest.raises(KeyboardInterrupt):
        Crashing(str(tmp_path / "run")).write("state.json", b"half")
    assert run.read("state.json") == b"new"  # the old content, whole
    assert [n for n in run.names() if n != "state.json"][0].startswith("state.json.tmp-")


def test_a_missing_directory_has_no_names_and_is_created_by_the_first_write(tmp_path):
    run = RunDir(str(tmp_path / "a" / "b"))
    assert run.names() == [] and not run.exists("x")
    run.write("x", b"1")
    assert run.exists("x") and run.is_file("x") and (tmp_path / "a" / "b" / "x").read_bytes() == b"1"
