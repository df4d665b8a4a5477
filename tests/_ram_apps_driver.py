"""Subprocess side of tests/test_storage.py: the apps on TensorFlow's in-memory filesystem.

`ram://` files live in one process's memory, so pretrain, export and embed run here one
after the other through their `main` functions (each app's flags defined afresh), and
what they wrote is read back with tf.io.gfile before the process ends. Usage, from an
empty working directory (which must stay empty):

    python tests/_ram_apps_driver.py folder:IMAGES OUT.json
"""
import contextlib
import importlib
import io
import json
import os
import sys

# This checkout's package and apps, not whichever one `pip install -e` last pointed at.
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import keras_simclr  # noqa: E402,F401  (sets the TensorFlow runtime flags first)
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from absl import flags  # noqa: E402

FLAGS = flags.FLAGS
ABSL_FLAGS = set(FLAGS)
TINY = ["--image_size=16", "--width_multiplier=0.125", "--batch_size=16", "--head_depth=2",
        "--proj_dim=16", "--verbose=0"]
RUN, EXPORT, OUTPUT = "ram://runs/tiny", "ram://exports/tiny", "ram://out/x.npz"


def run_app(name, *args):
    """apps.NAME's main with `args` as its command line; returns what it printed."""
    for flag in set(FLAGS) - ABSL_FLAGS:  # the previous app's flags
        delattr(FLAGS, flag)
    sys.modules.pop(f"apps.{name}", None)
    module = importlib.import_module(f"apps.{name}")
    FLAGS([name, *args])
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        module.main([name])
    return printed.getvalue()


def tree(root):
    """Every file under `root`, relative to it, sorted."""
    return sorted(os.path.join(directory, name)[len(root) + 1:]
                  for directory, _, files in tf.io.gfile.walk(root) for name in files)


def load_npz(path):
    with tf.io.gfile.GFile(path, "rb") as f:
        return dict(np.load(io.BytesIO(f.read())))


def main(dataset, out_path):
    report = {}
    printed = run_app("pretrain", f"--dataset={dataset}", f"--model_dir={RUN}", "--epochs=2",
                      "--json", *TINY)
    report["summary"] = json.loads(printed.strip().splitlines()[-1])
    report["run_files"] = tree(RUN)
    with tf.io.gfile.GFile(f"{RUN}/config.json") as f:
        report["config_dataset"] = json.load(f)["dataset"]

    # a truncated newest checkpoint (as an interrupted copy leaves it) is skipped on resume
    newest = f"{RUN}/checkpoints/ckpt-2.keras"
    with tf.io.gfile.GFile(newest, "rb") as f:
        data = f.read()
    with tf.io.gfile.GFile(newest, "wb") as f:
        f.write(data[: len(data) // 2])
    printed = run_app("pretrain", f"--dataset={dataset}", f"--model_dir={RUN}", "--epochs=3",
                      "--save_every_steps=3", "--json", *TINY)
    report["resumed"] = json.loads(printed.strip().splitlines()[-1])
    report["checkpoints_after_resume"] = sorted(tf.io.gfile.listdir(f"{RUN}/checkpoints"))
    # a checkpoint inside an epoch resumes there (the run's end removed to get back to it)
    for name in ("checkpoints/ckpt-3.keras", "model.keras"):
        tf.io.gfile.remove(f"{RUN}/{name}")
    printed = run_app("pretrain", f"--dataset={dataset}", f"--model_dir={RUN}", "--epochs=3",
                      *TINY)
    report["resumed_inside"] = [line for line in printed.splitlines()
                                if line.startswith("resuming")]
    run_app("finetune", f"--model_dir={RUN}", "--label_fraction=0.5", "--epochs=1",
            "--batch_size=16")
    report["finetune_files"] = tree(f"{RUN}/finetune_0.5")

    for attempt in ("first", "again"):  # the second export replaces the first
        report[f"export_{attempt}"] = run_app("export", f"--model_dir={RUN}",
                                              f"--export_dir={EXPORT}")
    report["export_files"] = tree(EXPORT)
    report["exports"] = sorted(tf.io.gfile.listdir("ram://exports"))
    served = tf.saved_model.load(EXPORT).signatures["serving_default"]
    report["served_shape"] = list(served(images=tf.zeros((2, 16, 16, 3), tf.uint8))[
        "embedding"].shape)

    report["embed"] = run_app("embed", f"--model={EXPORT}", f"--dataset={dataset}",
                              f"--output={OUTPUT}")
    run_app("embed", f"--model={RUN}", "--output=ram://out/from_run.npz")
    saved, from_run = load_npz(OUTPUT), load_npz("ram://out/from_run.npz")
    report["embedding"] = {"shape": list(saved["x"].shape), "dtype": str(saved["x"].dtype),
                           "labels": int(saved["y"].shape[0]),
                           "max_difference": float(np.abs(saved["x"] - from_run["x"]).max())}
    report["out_files"] = sorted(tf.io.gfile.listdir("ram://out"))
    report["working_directory"] = sorted(os.listdir("."))
    with open(out_path, "w") as f:
        json.dump(report, f)


if __name__ == "__main__":
    main(*sys.argv[1:])
