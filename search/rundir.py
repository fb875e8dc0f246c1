"""The run directory's files through ``pyarrow.fs``: one path normalisation and one atomic write, for every layer.

A run directory is a local path or any URI ``pyarrow.fs`` opens (``s3://bucket/run``, ``gs://...``).
``file://PATH`` is the local path PATH, and a relative local path is made absolute once, here
(:func:`absolute`), so the checkpoint store (search/checkpoint.py), the actors' outputs
(actors/storage.py) and the messages that name the directory all see the same place. A file is
written under a temporary name in the same directory and then moved into place
(:meth:`RunDir.write`): a reader sees the old content or the new, never part of it.
"""
from __future__ import annotations

import os
import uuid

import pyarrow.fs as pafs


def is_uri(location: str | os.PathLike) -> bool:
    """A remote location (``s3://``, ``gs://``, ...); ``file://`` and plain paths are local."""
    text = str(location)
    return "://" in text and not text.startswith("file://")


def absolute(location: str | os.PathLike) -> str:
    """Local paths absolute, without ``file://`` (actors on this node write to them); URIs unchanged."""
    if is_uri(location):
        return str(location)
    return os.path.abspath(str(location).removeprefix("file://"))


class RunDir:
    """One run directory: names inside it are plain file names (``state.json``, ``model/config.json``)."""

    def __init__(self, location: str | os.PathLike) -> None:
        self.uri = str(location)  # as given: what messages name
        self.fs, root = pafs.FileSystem.from_uri(absolute(location))
        self.root = root.rstrip("/")

    def path(self, name: str) -> str:
        return f"{self.root}/{name}"

    def _move(self, src: str, dst: str) -> None:
        self.fs.move(src, dst)

    def write(self, name: str, data: bytes) -> None:
        """Atomic write of `name`: to a temporary name beside it, then moved into place."""
        self.fs.create_dir(self.root, recursive=True)
        tmp = self.path(f"{name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}")
        with self.fs.open_output_stream(tmp) as f:
            f.write(data)
        self._move(tmp, self.path(name))

    def read(self, name: str) -> bytes:
        with self.fs.open_input_stream(self.path(name)) as f:
            return f.read()

    def exists(self, name: str) -> bool:
        """Anything (file or directory) called `name`."""
        return self.fs.get_file_info(self.path(name)).type != pafs.FileType.NotFound

    def is_file(self, name: str) -> bool:
        return self.fs.get_file_info(self.path(name)).type == pafs.FileType.File

    def names(self) -> list[str]:
        """The names directly inside the directory (none when it does not exist)."""
        try:
            infos = self.fs.get_file_info(pafs.FileSelector(self.root, allow_not_found=True))
        except OSError:
            return []
        return sorted(i.base_name for i in infos)

    def delete(self, name: str) -> None:
        self.fs.delete_file(self.path(name))
