"""The ground floor: helpers that know nothing of SimCLR and import nothing of the package.

- `runtime`: process settings that must be made before TensorFlow is imported (oneDNN on,
  a quiet start); imported first by `keras_simclr/__init__.py`, so this `__init__` imports
  nothing.
- `registry`: the named registries behind every plug-in point (`--loss`, `--view_maker`,
  `--backbone`).
- `storage`: files on any TensorFlow filesystem (local, `gs://`, `ram://`), written atomically
  where the filesystem can.

Add here only what any layer above may need and what needs nothing above it.
"""
