"""Image-folder datasets, `folder:PATH`, on any filesystem TensorFlow reads.

Images are laid out as `PATH/SPLIT/CLASS/*.{jpg,jpeg,png,bmp,gif}` (TFDS ImageFolder
layout; labels index the sorted class folder names of all splits), or unlabelled as
`PATH/SPLIT/*.{jpg,...}` (label -1). PATH is a local path or a URL of a TensorFlow
filesystem (`gs://bucket/images`, `ram://images`, ...), read with `tf.io.read_file`.

Files are checked up front with cheap header and trailer checks (a full PIL decode only
for files that fail them), so that corrupt, truncated and non-image files are skipped with
one `DataWarning` that counts them and names the first few (`strict=True` raises
`DataError` instead). The scan runs once per process and folder state (about a second
for 50,000 local files): adding, removing or renaming files makes a new scan.

A URL is listed, checked and read through `tf.io.gfile`, with one glob per depth rather
than a walk: object stores (`gs://`) and `ram://` have no real folders (`ram://` lists
neither folders nor what is in them), so a folder is a path with entries under it, or one
that `stat` says is a folder. Local folders use `os.scandir` and `open` instead: through
`tf.io.gfile` the first `describe` of the 50,000-file CIFAR-10 folder took 5x as long
(12 s instead of 2 s; the globs alone 2.4 s, spent again on every later `describe`).
"""
import collections
import concurrent.futures
import functools
import io
import os
import re
import warnings

import numpy as np
import tensorflow as tf

from keras_simclr.data.source import (ArraySource, DataError, DataWarning, DatasetInfo,
                                      UNLABELLED)

FOLDER_PREFIX = "folder:"
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif")

_NAMED_BAD_FILES = 5
_FOLDER = "a folder"  # what `_check_file` says of a folder

_Scan = collections.namedtuple("_Scan", "splits class_names skipped")
_Split = collections.namedtuple("_Split", "paths labels pil")


class FolderSource(ArraySource):
    """An image folder; records are `(path, int64 label, whether PIL must decode it)`."""

    def __init__(self, *, name, data_dir=None, strict=False):
        del data_dir  # the path is in the name
        path = name[len(FOLDER_PREFIX):] if name.startswith(FOLDER_PREFIX) else name
        root = _normalised(path)
        try:
            if not path or not tf.io.gfile.isdir(root):
                raise DataError(f"image folder {path!r} does not exist"
                                + (" (it is not a folder)" if tf.io.gfile.exists(root)
                                   else "")
                                + f"; {FOLDER_PREFIX}PATH expects PATH/SPLIT/CLASS/*.jpg")
            state = _folder_state(root)
        except tf.errors.OpError as e:  # no filesystem for the scheme, no permission, ...
            raise DataError(f"image folder {path!r} cannot be listed: "
                            f"{e.message or type(e).__name__}") from None
        self.root = root
        self.strict = strict
        self.scan = _scan_folder(root, strict, state)
        splits = {split: len(s.paths) for split, s in self.scan.splits.items()}
        self.info = DatasetInfo(FOLDER_PREFIX + path, splits, self.scan.class_names)
        if self.scan.skipped and strict:
            raise DataError(_skipped_message(root, self.scan.skipped, "cannot be read"))
        self.any_pil = any(s.pil.any() for s in self.scan.splits.values())

    def arrays(self, split):
        return self.scan.splits[split]

    def decode(self, *, record):
        path, label, pil = record

        def native():
            return tf.io.decode_image(tf.io.read_file(path), channels=3, dtype=tf.uint8,
                                      expand_animations=False)

        def with_pil():
            return tf.numpy_function(_pil_decode, [path], tf.uint8, stateful=False)

        if self.any_pil:
            image = tf.cond(pil, with_pil, native)
        else:
            image = native()
        return tf.ensure_shape(image, [None, None, 3]), label


def _normalised(path):
    """An absolute local path, or a URL without trailing slashes."""
    if "://" in path:
        scheme, rest = path.split("://", 1)
        return f"{scheme}://{rest.rstrip('/')}"
    return os.path.abspath(os.path.expanduser(path))


def _is_local(root):
    return "://" not in root


def _folder_state(root):
    """A cache key of the folder's state, which adding, removing or renaming files changes.

    Locally, the modification times of the split and class folders (a few stat calls);
    elsewhere the listing itself (object stores have no folder times).
    """
    if not _is_local(root):
        return _gfile_listing(root)
    signature = []
    for dirpath in _local_subdirs(root):
        signature.append((dirpath, os.stat(dirpath).st_mtime_ns))
        signature.extend((d, os.stat(d).st_mtime_ns) for d in _local_subdirs(dirpath))
    return tuple(signature)


def _local_subdirs(path):
    with os.scandir(path) as entries:
        return sorted(e.path for e in entries
                      if e.is_dir() and not e.name.startswith("."))


def _local_listing(root):
    """Like `_gfile_listing`, with every folder known (`os.scandir` tells, without stat)."""
    entries, folders = [], []

    def scan(path, depth):
        with os.scandir(path) as it:
            for entry in it:
                if entry.name.startswith("."):
                    continue
                if entry.is_dir():
                    entries.append(entry.path)
                    folders.append(entry.path)
                    if depth < 3:
                        scan(entry.path, depth + 1)
                elif entry.is_file():
                    entries.append(entry.path)

    scan(root, 1)
    return tuple(sorted(entries)), tuple(sorted(folders))


def _gfile_listing(root):
    """Non-hidden paths 1 to 3 levels under `root` (split, class, file), and the folders.

    Returns:
        (sorted tuple of every path found or implied, sorted tuple of those known to be
        folders: parents of other paths and split-level folders). Whether a path 2 or 3
        levels down without entries under it is a folder is left to `_check_file`, which
        stats it anyway, so that no file is statted twice.
    """
    pattern = re.sub(r"([\[*?])", r"[\1]", root)  # the root matches itself only
    entries, folders = set(), set()
    for depth in (1, 2, 3):
        for path in tf.io.gfile.glob(pattern + "/*" * depth):
            path = path.rstrip("/")
            parts = path[len(root) + 1:].split("/")
            if not path.startswith(root + "/") or len(parts) != depth or any(
                    not part or part.startswith(".") for part in parts):
                continue
            entries.add(path)
            folders.update(f"{root}/{'/'.join(parts[:k])}" for k in range(1, depth))
    folders.update(path for path in entries
                   if _depth(root, path) == 1 and path not in folders
                   and tf.io.gfile.isdir(path))  # empty split folders: a few calls
    return tuple(sorted(entries | folders)), tuple(sorted(folders))


def _depth(root, path):
    return path.count("/", len(root))


@functools.lru_cache(maxsize=8)
def _scan_folder(root, strict, state):
    """List and check every file once per process and folder state; warn once."""
    local = _is_local(root)
    entries, folders = _local_listing(root) if local else state
    folders = set(folders)
    split_dirs = sorted(p for p in folders if _depth(root, p) == 1)
    if not split_dirs:
        raise DataError(f"image folder {root} is empty: it has no split folders "
                        f"(expected {root}/SPLIT/CLASS/*.jpg, e.g. train/ and test/)")
    children = collections.defaultdict(list)  # sorted, as `entries` is
    for path in entries:
        if _depth(root, path) > 1:
            children[path.rsplit("/", 1)[0]].append(path)
    unknown = [p for p in entries if _depth(root, p) > 1 and p not in folders]
    kinds = dict(zip(unknown, _check_files(unknown, local)))
    folders.update(p for p in unknown if kinds[p] == _FOLDER)

    layout = {}  # split -> (files [(path, label)], skipped [(path, reason)])
    class_dirs = {s: [c for c in children[s] if c in folders] for s in split_dirs}
    class_names = sorted({os.path.basename(c) for dirs in class_dirs.values() for c in dirs})
    label_of = {name: i for i, name in enumerate(class_names)}
    for split_dir in split_dirs:
        files, skipped = [], []
        for path in children[split_dir]:
            if path in folders:
                continue
            if class_dirs[split_dir]:
                skipped.append((path, "outside the class folders"))
            else:
                files.append((path, UNLABELLED))
        for class_dir in class_dirs[split_dir]:
            label = label_of[os.path.basename(class_dir)]
            files.extend((p, label) for p in children[class_dir] if p not in folders)
            skipped.extend((p, "a folder inside a class folder")
                           for p in children[class_dir] if p in folders)
        layout[os.path.basename(split_dir)] = (files, skipped)

    splits, skipped_all = {}, []
    for split, (files, skipped) in layout.items():
        good = [(p, label) for p, label in files if kinds[p] in ("native", "pil")]
        skipped += [(p, kinds[p]) for p, _ in files if kinds[p] not in ("native", "pil")]
        skipped_all += skipped
        if not good:
            raise DataError(f"split folder {root}/{split} holds no readable images "
                            f"(*{', *'.join(IMAGE_EXTENSIONS)})"
                            + (f"; skipped {len(skipped)} entries" if skipped else ""))
        splits[split] = _Split(np.array([p for p, _ in good]),
                               np.array([label for _, label in good], np.int64),
                               np.array([kinds[p] == "pil" for p, _ in good]))
    if skipped_all and not strict:
        warnings.warn(_skipped_message(root, skipped_all, "skipped"), DataWarning)
    return _Scan(splits, tuple(class_names), tuple(skipped_all))


def _skipped_message(root, skipped, verb):
    named = "; ".join(f"{p[len(root) + 1:]} ({why})" for p, why in skipped[:_NAMED_BAD_FILES])
    more = f"; and {len(skipped) - _NAMED_BAD_FILES} more" if len(
        skipped) > _NAMED_BAD_FILES else ""
    return (f"{len(skipped)} entries in image folder {root} {verb} "
            f"(not readable images): {named}{more}")


def _check_files(paths, local):
    """Classify each path: "native" (TensorFlow decodes it), "pil", a folder, or why it
    is bad.

    Cheap checks first: the extension, the format's magic bytes and its end marker (JPEG
    EOI, PNG IEND, GIF trailer). Only files failing them are decoded fully with PIL,
    which also reads what TensorFlow does not (palette BMPs, JPEGs with trailing data).
    Threads overlap the file reads on a cold disk cache or a remote filesystem.
    """
    chunks = [paths[i:i + 512] for i in range(0, len(paths), 512)]
    with concurrent.futures.ThreadPoolExecutor(16) as pool:
        return [kind for chunk in pool.map(
            lambda c: [_check_file(p, local) for p in c], chunks) for kind in chunk]


_MAGIC_AND_END = (
    (b"\xff\xd8\xff", (b"\xff\xd9",)),
    (b"\x89PNG\r\n\x1a\n", (b"IEND\xaeB`\x82",)),
    (b"GIF87a", (b";",)),
    (b"GIF89a", (b";",)),
)


def _check_file(path, local):
    """A local path is a file (the listing said so); a URL may be a folder."""
    try:
        stat = None if local else tf.io.gfile.stat(path)
        if stat is not None and stat.is_directory:
            return _FOLDER
        if not path.lower().endswith(IMAGE_EXTENSIONS):
            return "not an image file name"
        if local:
            with open(path, "rb") as f:
                head = f.read(16)
                f.seek(max(0, os.fstat(f.fileno()).st_size - 16))
                tail = f.read(16)
        else:
            with tf.io.gfile.GFile(path, "rb") as f:
                head = f.read(16)
                f.seek(max(0, stat.length - 16))
                tail = f.read(16)
    except OSError as e:
        return f"unreadable: {e.strerror}"
    except tf.errors.OpError as e:
        return f"unreadable: {e.message or type(e).__name__}"
    if not head:
        return "empty file"
    for magic, ends in _MAGIC_AND_END:
        if head.startswith(magic) and tail.endswith(ends):
            return "native"
    try:
        _pil_image(path)
    except Exception as e:  # PIL raises many types for bad data  # noqa: BLE001
        return f"{type(e).__name__}: {e}"[:120]
    return "pil"


def _pil_image(path):
    from PIL import Image

    with tf.io.gfile.GFile(path, "rb") as f:
        encoded = f.read()
    with Image.open(io.BytesIO(encoded)) as image:
        image.load()
        if image.mode.startswith("I;16") or image.mode == "I":
            array = np.asarray(image, np.uint32) >> (8 if image.mode != "I" else 0)
            image = Image.fromarray(np.clip(array, 0, 255).astype(np.uint8))
        return np.asarray(image.convert("RGB"))


def _pil_decode(path):
    return _pil_image(path.decode() if isinstance(path, bytes) else path)
