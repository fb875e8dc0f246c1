"""Run-directory outputs through ``pyarrow.fs``: a local path or any URI it opens (s3://, gs://, ...)."""
from __future__ import annotations

import os
import uuid
from pathlib import Path

import pyarrow.fs as pafs


def is_uri(path: str) -> bool:
    return "://" in str(path) and not str(path).startswith("file://")


def absolute(path: str) -> str:
    """Local paths made absolute (actors on this node write to them); URIs unchanged."""
    if is_uri(path):
        return str(path)
    return os.path.abspath(str(path).removeprefix("file://"))


def _fs(uri: str) -> tuple[pafs.FileSystem, str]:
    fs, root = pafs.FileSystem.from_uri(uri if is_uri(uri) else absolute(uri))
    return fs, root.rstrip("/")


def write_file(run_dir: str, name: str, data: bytes) -> None:
    """Atomic write of run_dir/name (temporary name, then move)."""
    fs, root = _fs(run_dir)
    fs.create_dir(root, recursive=True)
    tmp = f"{root}/{name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    with fs.open_output_stream(tmp) as f:
        f.write(data)
    fs.move(tmp, f"{root}/{name}")


def exists(run_dir: str, name: str) -> bool:
    fs, root = _fs(run_dir)
    return fs.get_file_info(f"{root}/{name}").type != pafs.FileType.NotFound


def read_file(run_dir: str, name: str) -> bytes:
    fs, root = _fs(run_dir)
    with fs.open_input_stream(f"{root}/{name}") as f:
        return f.read()


def upload_dir(local: Path, dest: str) -> None:
    """Copy a local directory to `dest` (replacing what was there)."""
    fs, root = _fs(dest)
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
