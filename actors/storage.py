"""Run-directory outputs of the actors: files through search/rundir.py (its path normalisation and atomic write), model directories copied in."""
from __future__ import annotations

import os
from pathlib import Path

import pyarrow.fs as pafs

from efficientllava.search.rundir import RunDir, absolute, is_uri

__all__ = ["absolute", "exists", "is_uri", "read_file", "upload_dir", "write_dir", "write_file"]


def write_file(run_dir: str, name: str, data: bytes) -> None:
    """Atomic write of run_dir/name (RunDir.write)."""
    RunDir(run_dir).write(name, data)


def exists(run_dir: str, name: str) -> bool:
    return RunDir(run_dir).exists(name)


def read_file(run_dir: str, name: str) -> bytes:
    return RunDir(run_dir).read(name)


def upload_dir(local: Path, dest: str) -> None:
    """Copy a local directory to `dest` (replacing what was there)."""
    target = RunDir(dest)
    fs, root = target.fs, target.root
    if fs.get_file_info(root).type != pafs.FileType.NotFound:
        fs.delete_dir(root)
    fs.create_dir(root, recursive=True)
    pafs.copy_files(str(local), root, source_filesystem=pafs.LocalFileSystem(), destination_filesystem=fs)


def write_dir(files: dict[str, bytes], dest: str) -> None:
    """Write {relative path: bytes} as directory `dest`: into a temporary sibling, then moved into place."""
    if is_uri(dest):
        import tempfile

        with tempfile.TemporaryDirectory() as tmp:
            write_dir(files, os.path.join(tmp, "d"))
            upload_dir(Path(tmp) / "d", dest)
        return
    import shutil

    dest_path = Path(absolute(dest))
    tmp = dest_path.with_name(f".{dest_path.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    for rel, data in files.items():
        target = tmp / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)
    if dest_path.exists():
        shutil.rmtree(dest_path)
    tmp.rename(dest_path)
