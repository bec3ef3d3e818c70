"""Where a sweep's Ray Tune state lives: a local folder or a URI, through pyarrow's filesystems.

Ray Tune writes its state and checkpoints through ``pyarrow.fs`` (``s3://``, ``gs://``,
``abfs://``, ``hdfs://``, ``file://``, local paths); flowtopo writes its own files beside them
(the sweep context, the integrity signature) through the same layer, so ``--storage
s3://BUCKET/PREFIX`` stays a URI end to end instead of becoming a local folder named ``s3:``.
Credentials and endpoints come from the environment as for any pyarrow/AWS client
(``AWS_ACCESS_KEY_ID``, ``AWS_ENDPOINT_URL``, an instance role...).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from flowtopo.errors import InputError


@dataclass(frozen=True)
class Storage:
    """A folder on some filesystem.

    Attributes:
        fs: the ``pyarrow.fs.FileSystem``.
        root: the folder's path on ``fs`` (no trailing slash).
        uri: what Ray Tune is given: the absolute local path, or the URI.
        local: True for the local filesystem (permissions can be checked there).

    """

    fs: Any
    root: str
    uri: str
    local: bool

    def child(self, name: str) -> Storage:
        """The sub-folder ``name``."""
        return Storage(self.fs, f"{self.root}/{name}", f"{self.uri}/{name}", self.local)

    def _path(self, rel: str) -> str:
        return f"{self.root}/{rel}" if rel else self.root

    def exists(self, rel: str = "") -> bool:
        """Whether the file or folder ``rel`` (relative to the root) exists."""
        import pyarrow.fs as pfs

        return bool(self.fs.get_file_info(self._path(rel)).type != pfs.FileType.NotFound)

    def is_file(self, rel: str) -> bool:
        """Whether ``rel`` is a file."""
        import pyarrow.fs as pfs

        return bool(self.fs.get_file_info(self._path(rel)).type == pfs.FileType.File)

    def read_bytes(self, rel: str) -> bytes:
        """The content of the file ``rel``."""
        with self.fs.open_input_stream(self._path(rel)) as f:
            return bytes(f.read())

    def read_text(self, rel: str) -> str:
        """The content of the file ``rel`` as UTF-8."""
        return self.read_bytes(rel).decode()

    def write_text(self, rel: str, text: str) -> None:
        """Write the file ``rel`` (folders created as needed; replaced as a whole)."""
        path = self._path(rel)
        self.fs.create_dir(path.rsplit("/", 1)[0], recursive=True)
        with self.fs.open_output_stream(path) as f:
            f.write(text.encode())

    def mkdir(self) -> None:
        """Create the folder (and its parents)."""
        self.fs.create_dir(self.root, recursive=True)

    def files(self) -> list[str]:
        """Every file under the folder, relative to it, sorted."""
        import pyarrow.fs as pfs

        if not self.exists():
            return []
        infos = self.fs.get_file_info(pfs.FileSelector(self.root, recursive=True))
        return sorted(i.path[len(self.root) + 1:] for i in infos
                      if i.type == pfs.FileType.File)

    def chunks(self, rel: str, size: int = 1 << 20) -> Iterator[bytes]:
        """The file ``rel`` in blocks of ``size`` bytes."""
        with self.fs.open_input_stream(self._path(rel)) as f:
            while block := f.read(size):
                yield bytes(block)

    def local_path(self) -> Path:
        """The folder as a local path (only for ``local`` storage)."""
        assert self.local
        return Path(self.root)


def open_storage(where: str | Path) -> Storage:
    """A `Storage` for a local folder (made absolute) or a URI such as ``s3://BUCKET/PREFIX``.

    ``file://`` URIs become local folders.

    Raises:
        InputError: a URI pyarrow does not understand (unknown scheme, bad bucket name...).

    """
    import pyarrow.fs as pfs

    text = str(where)
    if "://" not in text:
        p = Path(text).expanduser().resolve()
        return Storage(pfs.LocalFileSystem(), p.as_posix(), p.as_posix(), True)
    try:
        fs, path = pfs.FileSystem.from_uri(text)
    except (ValueError, OSError, TypeError) as err:  # pyarrow's ArrowInvalid is a ValueError
        first = (str(err).splitlines() or [""])[0]
        raise InputError(f"storage {text!r}: not a usable location ({first})") from None
    path = path.rstrip("/")
    if isinstance(fs, pfs.LocalFileSystem):
        p = Path(path).resolve()
        return Storage(fs, p.as_posix(), p.as_posix(), True)
    return Storage(fs, path, text.rstrip("/"), False)
