"""A sweep folder's state is ours before Ray unpickles it: an HMAC over every file in it.

``flowtopo sweep resume DIR`` hands ``DIR`` (a folder or a storage URI,
`flowtopo.sweep.storage`) to ``ray.tune.Tuner.restore``, which unpickles
``tuner.pkl``, the searcher's state and each trial's ``params.pkl``: whoever can write ``DIR``
(shared storage, a bucket) could otherwise run code as the user who resumes. So every time a
sweep's search phase stops (finished, interrupted, or failed), flowtopo signs the folder:
``flowtopo-sweep.sig`` lists every file with the HMAC-SHA256 of its content, under a key kept
in the user's own config folder (created 0600 on first use). `verify_folder` checks that
manifest, that no file was added, removed or changed, and that nothing in the folder is
writable by other users, BEFORE anything in it is unpickled.

The key: ``$FLOWTOPO_CONFIG_HOME/sweep.key``, else ``$XDG_CONFIG_HOME/flowtopo/sweep.key``,
else ``~/.config/flowtopo/sweep.key``. A sweep resumed on another machine needs the same key
there (copy it, keeping mode 0600). Hand-written here: the standard library's ``hmac`` and
``secrets`` do the cryptography; what is new is only which files are covered and when.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import secrets
import stat
from pathlib import Path

from flowtopo.errors import InputError
from flowtopo.sweep.storage import Storage, open_storage

SIGNATURE_FILE = "flowtopo-sweep.sig"
_VERSION = 1


def config_home() -> Path:
    """The folder of flowtopo's per-user files (see module docstring)."""
    if os.environ.get("FLOWTOPO_CONFIG_HOME"):
        return Path(os.environ["FLOWTOPO_CONFIG_HOME"])
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "flowtopo"


def load_key(create: bool = False) -> bytes:
    """The user's signing key (32 random bytes), created 0600 when ``create`` and absent.

    Raises:
        InputError: no key and not ``create``; a key file readable or writable by others.

    """
    path = config_home() / "sweep.key"
    if not path.exists():
        if not create:
            raise InputError(f"no sweep signing key at {path}: this sweep was not started by "
                             "this user on this machine (copy the key from where it was, "
                             "mode 0600)")
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(secrets.token_hex(32))
    mode = path.stat().st_mode
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise InputError(f"{path}: the sweep signing key must be private (chmod 600 {path})")
    return bytes.fromhex(path.read_text().strip())


def _store(folder: str | Path | Storage) -> Storage:
    return folder if isinstance(folder, Storage) else open_storage(folder)


def _files(store: Storage) -> list[str]:
    return [f for f in store.files() if f != SIGNATURE_FILE]


def _mac(key: bytes, data: bytes) -> str:
    return hmac.new(key, data, hashlib.sha256).hexdigest()


def _file_mac(key: bytes, store: Storage, rel: str) -> str:
    h = hmac.new(key, digestmod=hashlib.sha256)
    for block in store.chunks(rel):
        h.update(block)
    return h.hexdigest()


def _manifest_mac(key: bytes, files: dict[str, str]) -> str:
    return _mac(key, json.dumps({"version": _VERSION, "files": files}, sort_keys=True).encode())


def sign_folder(folder: str | Path | Storage) -> str:
    """Write ``folder/flowtopo-sweep.sig`` over every file now in ``folder``.

    ``folder`` is a local path, a storage URI (``s3://...``) or a `Storage`. Returns the
    signature's path (or URI).
    """
    store = _store(folder)
    key = load_key(create=True)
    files = {rel: _file_mac(key, store, rel) for rel in _files(store)}
    text = json.dumps({"version": _VERSION, "files": files, "mac": _manifest_mac(key, files)},
                      indent=1)
    if store.local:  # replaced atomically; an object store's PUT is atomic already
        out = store.local_path() / SIGNATURE_FILE
        tmp = out.with_suffix(".tmp")
        tmp.write_text(text)
        tmp.replace(out)
    else:
        store.write_text(SIGNATURE_FILE, text)
    return f"{store.uri}/{SIGNATURE_FILE}"


def _writable_by_others(folder: Path) -> Path | None:
    uid = os.getuid()
    for p in [folder, *folder.rglob("*")]:
        st = p.lstat()
        if stat.S_ISLNK(st.st_mode):
            return p  # a link could point anywhere: not ours to follow
        if st.st_uid != uid or st.st_mode & stat.S_IWOTH:
            return p
    return None


def verify_folder(folder: str | Path | Storage) -> None:
    """Check ``folder`` is exactly as this user's flowtopo last signed it.

    On local storage the folder's owners and modes are checked too; in a bucket, who may write
    is the bucket's policy, and the signature is what protects the user.

    Raises:
        InputError: no signature, a bad signature, a file added/removed/changed, or something
            in a local folder owned by another user, writable by others, or a symbolic link.

    """
    store = _store(folder)
    where = store.uri
    if not store.is_file(SIGNATURE_FILE):
        raise InputError(f"{where}: no {SIGNATURE_FILE}: refusing to unpickle an unsigned "
                         "sweep state (it was not stopped by flowtopo, or not by this user)")
    if store.local:
        loose = _writable_by_others(store.local_path())
        if loose is not None:
            raise InputError(f"{loose}: owned by another user, writable by others, or a link: "
                             "refusing to resume from a folder others can change")
    key = load_key()
    sig = f"{where}/{SIGNATURE_FILE}"
    try:
        manifest = json.loads(store.read_text(SIGNATURE_FILE))
        files = {str(k): str(v) for k, v in manifest["files"].items()}
        mac = str(manifest["mac"])
    except (ValueError, KeyError, TypeError, AttributeError):
        raise InputError(f"{sig}: unreadable signature file: refusing to resume") from None
    if not hmac.compare_digest(mac, _manifest_mac(key, files)):
        raise InputError(f"{sig}: the signature does not match this user's key: refusing to "
                         "resume")
    now = set(_files(store))
    changed = sorted(now ^ set(files))
    changed += sorted(n for n in now & set(files)
                      if not hmac.compare_digest(files[n], _file_mac(key, store, n)))
    if changed:
        more = f" (and {len(changed) - 3} more)" if len(changed) > 3 else ""
        raise InputError(f"{where}: changed since flowtopo signed it: "
                         f"{', '.join(changed[:3])}{more}: refusing to resume")
