"""What a data source provides, and the registry from dataset names to sources.

A source turns one `--dataset` string into encoded records of each split, a way to decode
one record into `(uint8 image, int64 label)`, the labels of a split and a `DatasetInfo`; the
pipelines (`pipelines.py`) do everything else (shuffling, caching, resizing, batching,
sharding). `Source` is that contract as a `typing.Protocol`, so a source needs no base
class; `ArraySource` implements it for records held in numpy arrays.

The registry maps an exact name (`shapes`) or a prefix ending in ":" (`folder:`) to a
factory, and `ANY_OTHER_NAME` to the source of every other name (TFDS), so that a new kind
of data is one module with its source plus one `register_source` line.
"""
import dataclasses
import difflib
from typing import Callable, Protocol

import numpy as np
import tensorflow as tf

UNLABELLED = -1
ANY_OTHER_NAME = "*"  # register_source key of the source of every unregistered name


class DataError(ValueError):
    """A dataset, split or file that cannot be used, with what exists instead."""


class DataWarning(UserWarning):
    """Files skipped while reading an image folder."""


@dataclasses.dataclass(frozen=True)
class DatasetInfo:
    """What a `--dataset` string names.

    Attributes:
        name: the dataset string (`shapes`, `folder:PATH`, a TFDS name).
        splits: number of usable examples per split name.
        class_names: label i is `class_names[i]`; empty when the data has no labels.
        image_size: side of the stored images when they are all the same square size
            (32 for `shapes` and `cifar10`), else None.
    """

    name: str
    splits: dict
    class_names: tuple
    image_size: int | None = None

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def num_examples(self, split: str) -> int:
        """Examples in `split`, a split name without TFDS slicing.

        Raises:
            DataError: there is no such split (it names the available ones).
        """
        check_split(self, split)
        return self.splits[split]


class Source(Protocol):
    """What the pipelines need from a data source; every method takes keyword arguments.

    Attributes:
        info: the `DatasetInfo` of the dataset string the source was opened with.
        strict: True when a record that fails to decode must raise; False when the
            pipelines skip it (image folders whose files passed cheap checks up front).
    """

    info: DatasetInfo
    strict: bool

    def count(self, *, split: str) -> int:
        """Examples in `split`; raises `DataError` naming the splits when there is none."""

    def records(self, *, split: str, input_context: tf.distribute.InputContext | None = None,
                shuffle_files: bool = False, seed: int | None = None,
                subset: np.ndarray | None = None) -> tf.data.Dataset:
        """Encoded records of `split` in dataset order: tuples of small tensors.

        `subset` (sorted unique indices in dataset order) keeps only those records; then
        the records are sharded by `input_context`. With `shuffle_files` the source may
        read its files in a `seed`ed random order (the pipelines shuffle records anyway).
        """

    def record_buffer(self, *, num_examples: int) -> int:
        """Size of a shuffle buffer of `num_examples` records (all of them if small)."""

    def labels(self, *, split: str) -> np.ndarray:
        """int64 labels of `split` in dataset order (`UNLABELLED` without labels)."""

    def decode(self, *, record: tuple) -> tuple[tf.Tensor, tf.Tensor]:
        """One record -> (uint8 image [H, W, 3], int64 label), in a tf.data graph."""


SourceFactory = Callable[..., Source]  # factory(*, name, data_dir, strict) -> Source


def check_split(info: DatasetInfo, split: str) -> None:
    """Raises `DataError` naming the available splits unless `split` is one of them."""
    if split not in info.splits:
        raise DataError(f"{info.name} has no split {split!r}; available splits: "
                        f"{', '.join(sorted(info.splits)) or 'none'}")


def shard(ds: tf.data.Dataset, input_context: tf.distribute.InputContext | None
          ) -> tf.data.Dataset:
    """The input pipeline `input_context` names reads every n-th element (all: None)."""
    if input_context is None or input_context.num_input_pipelines == 1:
        return ds
    return ds.shard(input_context.num_input_pipelines, input_context.input_pipeline_id)


class ArraySource:
    """A `Source` whose records are rows of in-memory numpy arrays, labels second.

    A subclass sets `info` (and `strict` when decoding may fail) and implements
    `arrays(split)` (a tuple of equally long arrays, the int64 labels at index 1); its
    `decode(record=row)` gets one row. The default `decode` passes `(image, label)` rows
    of decoded uint8 images through.
    """

    info: DatasetInfo
    strict = True

    def arrays(self, split: str) -> tuple:
        raise NotImplementedError

    def count(self, *, split: str) -> int:
        check_split(self.info, split)
        return self.info.splits[split]

    def records(self, *, split, input_context=None, shuffle_files=False, seed=None,
                subset=None):
        arrays = self.arrays(split)
        if subset is not None:
            arrays = tuple(array[subset] for array in arrays)
        return shard(tf.data.Dataset.from_tensor_slices(tuple(arrays)), input_context)

    def record_buffer(self, *, num_examples):
        return num_examples

    def labels(self, *, split):
        return np.array(self.arrays(split)[1], np.int64)

    def decode(self, *, record):
        image, label = record
        return image, label


# ----------------------------------------------------------------------------------------
# The registry

_FACTORIES: dict = {}  # name, "prefix:" or ANY_OTHER_NAME -> SourceFactory


def register_source(prefix_or_name: str, factory: SourceFactory | None = None):
    """Makes `open_source` (and every pipeline) open matching dataset strings with `factory`.

    Args:
        prefix_or_name: an exact dataset name (`"shapes"`), a prefix ending in ":" that
            dataset strings start with (`"folder:"`), or `ANY_OTHER_NAME` for every name
            nothing else matches. Registering a key again replaces its factory.
        factory: called as `factory(name=dataset, data_dir=data_dir, strict=strict)` and
            returning a `Source` (a source class is a factory). Omitted, `register_source`
            returns a decorator.

    Returns:
        `factory` (or, without it, a decorator that registers and returns its argument).
    """
    if not isinstance(prefix_or_name, str) or not prefix_or_name:
        raise ValueError(f"a source is registered under a non-empty name or prefix, got "
                         f"{prefix_or_name!r}")
    if factory is None:
        return lambda f: register_source(prefix_or_name, f)
    if not callable(factory):
        raise TypeError(f"source factory for {prefix_or_name!r} is not callable: {factory!r}")
    _FACTORIES[prefix_or_name] = factory
    return factory


def open_source(dataset: str, *, data_dir: str | None = None, strict: bool = False
                ) -> Source:
    """The source of a `--dataset` string.

    Args:
        dataset: an exact registered name, else a string starting with a registered
            prefix (the longest matching one wins), else any other name.
        data_dir: where sources that download keep their data (TFDS `data_dir`).
        strict: whether unreadable files raise `DataError` instead of being skipped.

    Returns:
        The `Source` its registered factory makes.
    """
    if not isinstance(dataset, str) or not dataset:
        raise DataError(f"dataset must be a non-empty string, got {dataset!r}")
    factory = _FACTORIES.get(dataset)
    if factory is None:
        prefixes = [key for key in _FACTORIES if key.endswith(":") and dataset.startswith(key)]
        key = max(prefixes, key=len) if prefixes else ANY_OTHER_NAME
        factory = _FACTORIES.get(key)
    if factory is None:
        raise DataError(unknown_dataset_message(dataset))
    return factory(name=dataset, data_dir=data_dir, strict=strict)


def unknown_dataset_message(name: str, known: tuple = (), kind: str = "",
                            hint: str = "") -> str:
    """Says which sources `name` is not and suggests close registered or `known` names.

    Args:
        known: further names to suggest from (e.g. every TFDS dataset).
        kind: what `known` names are, e.g. "a TFDS dataset" (empty: no such clause).
        hint: a suggestion placed before the close names, e.g. "did you mean folder:x? ".
    """
    exact = sorted(key for key in _FACTORIES if key != ANY_OTHER_NAME and ":" not in key)
    prefixes = sorted(key for key in _FACTORIES if key.endswith(":"))
    candidates = list(dict.fromkeys([*exact, *known]))
    close = difflib.get_close_matches(name.split(":")[0].split("/")[0].lower(), candidates,
                                      n=5)
    nots = [f"not {n!r}" for n in exact] + [f"not {p}..." for p in prefixes]
    return (f"unknown dataset {name!r}: {', '.join(nots)}"
            + (f" and not {kind}" if kind else "") + "; " + hint
            + (f"did you mean {', '.join(close)}? " if close else "")).rstrip("; ")
