"""Files on any TensorFlow filesystem: local paths, `gs://`, `hdfs://`, `ram://`, ...

Everything the library and the apps write or read under `--model_dir`, `--export_dir` and
`--output` goes through `tf.io.gfile` here, so a URL is never taken for a local path
(`os.makedirs("ram://runs/a")` would create a local folder `ram:/runs/a`).
The module is called `storage`, not `io`, so that it does not shadow the standard `io`
module in the files that use both.

Writes go to a temporary name beside the target (a dot-name containing `.partial-`) and
are then renamed over it (`write_bytes`, `write_json`, `save_model`). Where the filesystem
renames atomically (local disks, HDFS: `has_atomic_rename`) a reader or a `kill -9` sees
the old file or the whole new one, never a part. On object stores (`gs://`, `s3://`)
TensorFlow renames by copying then deleting, which is not atomic: a crash can leave the
temporary name behind, beside the old or the new file. Readers in this package ignore
temporary names, and `callbacks.latest_checkpoint` skips an unreadable newest checkpoint
(`keras_archive_problem`). `ram://` is treated like an object store (its directory
rename moves only the directory entry, not the files in it).
"""
import json
import os
import uuid
import zipfile
import zlib

import tensorflow as tf

gfile = tf.io.gfile

# Schemes whose rename(2)-like operation is atomic for files and directories.
_ATOMIC_RENAME_SCHEMES = ("", "file", "hdfs", "viewfs")

# What a missing, unwritable or unreachable file raises: OSError from Python's own file
# functions, these from tf.io.gfile (a user-facing error, not a bug).
FILESYSTEM_ERRORS = (
    OSError, tf.errors.NotFoundError, tf.errors.PermissionDeniedError,
    tf.errors.FailedPreconditionError, tf.errors.AlreadyExistsError,
    tf.errors.UnauthenticatedError,
)


def scheme(path: str) -> str:
    """The URL scheme of `path`.

    Args:
        path: a local path or a TensorFlow filesystem URL.
    Returns:
        "gs" for "gs://bucket/x", "" for a local path.
    """
    head, separator, _ = str(path).partition("://")
    return head if separator else ""


def has_atomic_rename(path: str) -> bool:
    """Whether renaming on the filesystem of `path` is atomic (files and directories).

    Args:
        path: a local path or a TensorFlow filesystem URL.
    Returns:
        True for local paths (`file://` too) and HDFS; False for object stores (`gs://`,
        `s3://`), which copy then delete, and for `ram://`, whose directory rename moves
        only the directory entry, not the files in it (TensorFlow 2.21).
    """
    return scheme(path) in _ATOMIC_RENAME_SCHEMES


def parent(path: str) -> str:
    """The directory holding `path` ("ram://" for "ram://x", "" for a bare file name).

    Args:
        path: a local path or a TensorFlow filesystem URL.
    Returns:
        The parent directory.
    """
    head = os.path.dirname(path)
    if scheme(path) and "://" not in head:
        return f"{scheme(path)}://"
    return head


def makedirs(path: str) -> None:
    """Create directory `path` and its parents on any filesystem (nothing if it exists).

    Args:
        path: a local path or a TensorFlow filesystem URL; "" does nothing.
    """
    if path:
        gfile.makedirs(path)


def _temporary_sibling(path: str) -> str:
    """A fresh name beside `path` that readers skip, with the same extension (Keras
    insists on `.keras`)."""
    root, extension = os.path.splitext(os.path.basename(path))
    return os.path.join(parent(path), f".{root}.partial-{uuid.uuid4().hex[:8]}{extension}")


def _replace_with(path: str, write) -> None:
    """Call `write(temporary)`, then rename the temporary file over `path`."""
    makedirs(parent(path))
    temporary = _temporary_sibling(path)
    try:
        write(temporary)
        gfile.rename(temporary, path, overwrite=True)
    except BaseException:
        if gfile.exists(temporary):
            gfile.remove(temporary)
        raise


def write_bytes(path: str, data: bytes) -> None:
    """Write `data` to `path` through a temporary sibling and a rename.

    Args:
        path: a local path or a TensorFlow filesystem URL; its parents are created.
        data: the whole content.
    """
    def write(temporary):
        with gfile.GFile(temporary, "wb") as f:
            f.write(data)
    _replace_with(path, write)


def write_json(path: str, value) -> None:
    """Write `value` as indented JSON with sorted keys (see `write_bytes`).

    Args:
        path: a local path or a TensorFlow filesystem URL.
        value: anything `json.dumps` accepts.
    """
    write_bytes(path, (json.dumps(value, indent=2, sort_keys=True) + "\n").encode())


def read_json(path: str) -> dict:
    """The JSON object in `path`, or {} when there is no such file.

    Args:
        path: a local path or a TensorFlow filesystem URL.
    Returns:
        The parsed object. A file that is not valid JSON raises ValueError naming it.
    """
    if not gfile.exists(path):
        return {}
    with gfile.GFile(path, "r") as f:
        text = f.read()
    try:
        return json.loads(text)
    except json.JSONDecodeError as error:
        raise ValueError(f"{path} is not valid JSON: {error}") from None


def save_model(model, path: str) -> None:
    """`model.save(path)` through a temporary sibling and a rename (see the module
    docstring for what that guarantees on each filesystem).

    Keras 3.15 saves to any TensorFlow filesystem itself: for a URL it zips into memory
    and writes the bytes with gfile (`keras/src/saving/saving_lib.py`).

    Args:
        model: a Keras model.
        path: the `.keras` file; its parents are created.
    """
    _replace_with(path, model.save)


def keras_archive_problem(path: str) -> str | None:
    """What makes the `.keras` file at `path` unreadable, if anything.

    Reads the whole file and checks every member's CRC, so a truncated or damaged copy is
    told apart from a missing file (Keras reports both as "File not found").

    Args:
        path: a local path or a TensorFlow filesystem URL.
    Returns:
        None for a complete zip archive, else a short reason.
    """
    try:
        if not gfile.exists(path):
            return "no such file"
        size = gfile.stat(path).length
        with gfile.GFile(path, "rb") as f:
            if not zipfile.is_zipfile(f):
                return (f"not a complete .keras archive ({size} bytes; truncated, or not a "
                        "zip file)")
            f.seek(0)
            with zipfile.ZipFile(f) as archive:
                damaged = archive.testzip()
    except (OSError, EOFError, zipfile.BadZipFile, zlib.error, tf.errors.OpError) as error:
        return f"unreadable .keras archive ({type(error).__name__}: {error})"
    if damaged is not None:
        return f"damaged .keras archive (member {damaged} fails its CRC check)"
    return None


def copy_tree(source: str, target: str, last: str | None = None) -> None:
    """Copy directory `source` into `target` file by file, `target/last` after the rest.

    Args:
        source: a directory on any filesystem.
        target: the directory to create or fill; existing files are overwritten.
        last: a file name directly under `source` to copy after every other file (a
            SavedModel's `saved_model.pb`, so that the copy is loadable only once whole).
    """
    deferred = None
    for directory, _, files in gfile.walk(source):
        relative = directory[len(source):].strip("/")  # walk yields source + "/" + ...
        destination = os.path.join(target, relative) if relative else target
        makedirs(destination)
        for name in files:
            pair = (os.path.join(directory, name), os.path.join(destination, name))
            if not relative and name == last:
                deferred = pair
            else:
                gfile.copy(*pair, overwrite=True)
    if deferred:
        gfile.copy(*deferred, overwrite=True)
