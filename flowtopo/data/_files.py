"""User data from files: .npy, .npz (key ``x``, optional ``y``), .csv, and MNIST-family IDX files.

Nothing is downloaded: when files are missing the error says where to put them.
"""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np

from flowtopo.errors import InputError

FILE_SUFFIXES = (".npy", ".npz", ".csv")

# IDX type codes (http://yann.lecun.com/exdb/mnist/ format description).
_IDX_DTYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def read_array_file(path: str | Path) -> tuple[np.ndarray, np.ndarray | None]:
    """Read (x, y or None) from a .npy, .npz or .csv file.

    A CSV has one row per sample and numeric columns; an optional header row is skipped; with
    a column named ``label`` or ``y`` that column becomes the labels.

    Raises:
        InputError: missing file, unknown suffix, unreadable or non-numeric content.

    """
    p = Path(path)
    if not p.is_file():
        raise InputError(f"{p}: no such file")
    suffix = p.suffix.lower()
    try:
        if suffix == ".npy":
            return np.load(p, allow_pickle=False), None
        if suffix == ".npz":
            with np.load(p, allow_pickle=False) as z:
                if "x" not in z.files:
                    raise InputError(f"{p}: an .npz needs an array named 'x' (found {z.files})")
                return z["x"], (z["y"] if "y" in z.files else None)
        if suffix == ".csv":
            return _read_csv(p)
    except InputError:
        raise
    except (OSError, ValueError, EOFError) as err:  # EOFError: an empty .npy (click: "Aborted")
        raise InputError(f"{p}: cannot read ({err or type(err).__name__})") from None
    raise InputError(f"{p}: unknown file type {suffix!r}; use one of {', '.join(FILE_SUFFIXES)}")


def _read_csv(p: Path) -> tuple[np.ndarray, np.ndarray | None]:
    lines = [ln for ln in p.read_text().splitlines() if ln.strip()]
    if not lines:
        raise InputError(f"{p}: empty CSV file")
    header = None
    first = [c.strip() for c in lines[0].split(",")]
    if any(not _is_number(c) for c in first):
        header, lines = first, lines[1:]
    rows = []
    for i, ln in enumerate(lines, start=2 if header else 1):
        cells = [c.strip() for c in ln.split(",")]
        try:
            rows.append([float(c) for c in cells])
        except ValueError:
            bad = next(c for c in cells if not _is_number(c))
            raise InputError(f"{p}: line {i}: non-numeric value {bad!r}") from None
    widths = {len(r) for r in rows}
    if len(widths) > 1:
        raise InputError(f"{p}: rows have different numbers of columns {sorted(widths)}")
    data = np.array(rows)
    if header is not None:
        for name in ("label", "y"):
            if name in header:
                j = header.index(name)
                return np.delete(data, j, axis=1), data[:, j].astype(int)
    return data, None


def _is_number(s: str) -> bool:
    try:
        float(s)
    except ValueError:
        return False
    return True


MAX_IDX_BYTES = 1 << 30
"""Largest IDX payload read (1 GiB; MNIST's training images are 47 MB): the declared size is
checked BEFORE anything is allocated or decompressed, so a small gzip bomb cannot fill memory."""
MAX_IDX_DIMS = 8


def read_idx(path: str | Path) -> np.ndarray:
    """Read one IDX file (raw or gzip-compressed) into an array of its declared shape and type.

    The header is read first; its declared size (exact integers, no overflow) must be at most
    `MAX_IDX_BYTES` and then match the payload, which is streamed (never decompressed whole).

    Raises:
        InputError: missing file, a bad header, a declared size out of bounds or not matching.

    """
    import struct

    p = Path(path)
    if not p.is_file():
        raise InputError(f"{p}: no such file")
    with open(p, "rb") as probe:
        compressed = probe.read(2) == b"\x1f\x8b"
    try:
        with (gzip.open(p, "rb") if compressed else open(p, "rb")) as f:
            magic = f.read(4)
            if len(magic) < 4 or magic[0] != 0 or magic[1] != 0 or magic[2] not in _IDX_DTYPES:
                raise InputError(f"{p}: not an IDX file (bad magic number)")
            ndim = magic[3]
            if not 1 <= ndim <= MAX_IDX_DIMS:
                raise InputError(f"{p}: IDX header declares {ndim} dimensions (1 to "
                                 f"{MAX_IDX_DIMS} accepted)")
            head = f.read(4 * ndim)
            if len(head) < 4 * ndim:
                raise InputError(f"{p}: IDX header cut short")
            dims = struct.unpack(f">{ndim}i", head)
            if any(d <= 0 for d in dims):
                raise InputError(f"{p}: IDX header declares a non-positive size {dims}")
            dtype = np.dtype(_IDX_DTYPES[magic[2]])
            expected = dtype.itemsize
            for d in dims:
                expected *= d  # Python ints: no overflow
            if expected > MAX_IDX_BYTES:
                raise InputError(f"{p}: IDX header declares {expected} bytes of data, more than "
                                 f"the {MAX_IDX_BYTES} read")
            body = f.read(expected + 1)
    except (OSError, EOFError) as err:  # gzip.BadGzipFile is an OSError
        raise InputError(f"{p}: cannot read ({err})") from None
    if len(body) != expected:
        found = f"{len(body)}" if len(body) <= expected else "more"
        raise InputError(f"{p}: header says {expected} bytes of data, found {found}")
    return np.frombuffer(body, dtype=dtype).reshape(dims)


IDX_FILES = {
    "train_x": "train-images-idx3-ubyte",
    "train_y": "train-labels-idx1-ubyte",
    "test_x": "t10k-images-idx3-ubyte",
    "test_y": "t10k-labels-idx1-ubyte",
}


def read_idx_dir(directory: str | Path, family: str) -> dict[str, np.ndarray]:
    """Read the four MNIST-style IDX files from ``directory`` (each raw or ``.gz``).

    Returns:
        dict with ``train_x`` (n, 28*28) float in [0, 1], ``train_y``, ``test_x``, ``test_y``.

    Raises:
        InputError: a file is missing (the message lists the expected names and the folder).

    """
    d = Path(directory).expanduser()
    out: dict[str, np.ndarray] = {}
    for key, stem in IDX_FILES.items():
        cands = [d / stem, d / f"{stem}.gz"]
        found = next((c for c in cands if c.is_file()), None)
        if found is None:
            names = ", ".join(f"{s}[.gz]" for s in IDX_FILES.values())
            raise InputError(
                f"{family}: {stem}[.gz] not found in {d}; put the IDX files ({names}) there "
                "(flowtopo never downloads data)"
            )
        arr = read_idx(found)
        out[key] = arr.reshape(arr.shape[0], -1).astype(np.float32) / 255.0 if key.endswith(
            "x") else arr.astype(np.int64)
    return out
