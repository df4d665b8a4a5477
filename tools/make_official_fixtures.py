"""Regenerate tests/fixtures/official/: tiny official SimCLR models and their outputs.

The fixtures are written by the official implementation itself
(github.com/google-research/simclr, `tf2/`, commit 383d4143fd8cf7879ae10f1046a9baeb753ff438),
imported unmodified, so that `tests/test_official.py` checks the importer against the
paper's code rather than against a re-reading of it. That code needs TensorFlow 2 with
Keras 2 (tf.keras), which this project's TensorFlow no longer has, so it runs in a scratch
environment outside the repository:

    python3.11 -m venv /tmp/simclr-official && . /tmp/simclr-official/bin/activate
    pip install tensorflow-cpu==2.15.1 tensorflow-datasets==4.9.4 \
        tensorflow-metadata==1.14.0 "protobuf<5" "googleapis-common-protos<1.63"
    git clone https://github.com/google-research/simclr /tmp/simclr
    git -C /tmp/simclr checkout 383d4143fd8cf7879ae10f1046a9baeb753ff438
    python tools/make_official_fixtures.py --official_dir=/tmp/simclr/tf2 \
        --output_dir=tests/fixtures/official

`kd_loss.npz` holds the loss of the official distillation notebook
(`tf2/colabs/distillation_self_training.ipynb`, its `add_kd_loss` cell, run as it is) on
fixed logits at four temperatures, for tests/test_distillation.py.

(`--fixtures=r50_sk0_v2_ft1,kd_loss,...` writes only those. A full run rewrites the committed
fixtures identically, the gzip header's time aside.)

`--bench_dir=DIR` writes instead the released ResNet-50 1x's architecture at full size
(random weights) as an official SavedModel, which bench/official.py times.

Each fixture is a ResNet-50 at width 1/16 (h of 128 values) on 64 px images, 1.1-1.7 MB
(6.5 MB for the five), built with the official `model.Model` and saved with the official
`run.build_saved_model` as `tf2/run.py` saves (`saved_model/`: the graph, gzipped, and
`variables/`):
- `r50_sk0_v2`: SimCLRv2 layout, 3-layer projection head and a supervised head on h
  (pretraining with `lineareval_while_pretraining`, as the `pretrained` releases);
- `r50_sk1_v2`: the same with selective kernels (`sk_ratio=0.0625`, ResNet-D stem);
- `r50_v1`: a SimCLRv1 release, without projection head (`proj_head_mode=none`). The
  official `Model.__call__` unpacks the head's output into two tensors, which fails for
  `none` once the batch size is unknown, so this model subclasses `Model` and calls the
  same official layers in the same order without that unpacking;
- `r50_sk0_v2_ft1`, `r50_sk0_v2_ft2`: the SimCLRv2 layout in the official fine-tuning
  mode (`train_mode=finetune`, `fine_tune_after_block=-1`: the whole network, as SimCLRv2
  fine-tunes) with `ft_proj_selector` 1 (the paper's) and 2: variables of the same names
  and shapes as `r50_sk0_v2`'s (a fine-tuned release's are a pretrained one's), but the
  supervised head reads the output of that layer of the projection head, which only the
  graph records. `run.py` saves a fine-tuned model with the same `build_saved_model`.
Every variable gets random values (BN moving statistics, gamma and beta included; the
official initialisation would leave them at 0/1 and hide a mapping error), then
`outputs.npz` records the SavedModel's output dict for three fixed uint8 images
(`images`, fed as images / 255 like the official input pipeline's [0, 1] floats) with
`trainable=False`, and the embedding, projection and logits with `trainable=True` (BN on
batch statistics) as `<key>_trainable`.
"""
import ast
import gzip
import json
import os
import shutil
import sys

import numpy as np
from absl import app, flags

FLAGS = flags.FLAGS
flags.DEFINE_string("official_dir", None, "The official repository's tf2/ folder.")
flags.DEFINE_string("output_dir", "tests/fixtures/official", "Where the fixtures go.")
flags.DEFINE_list("fixtures", None, "Write only these fixtures (default: all).")
flags.DEFINE_string("bench_dir", None,
                    "Instead of the fixtures, write a full-size ResNet-50 1x (SimCLRv2 layout, "
                    "224 px, 1000 classes, random weights) SavedModel here, for bench/official.py.")

WIDTH = 0.0625
IMAGE_SIZE = 64
NUM_CLASSES = 10
PROJ_DIM = 32
TRAINING_KEYS = ("final_avg_pool", "proj_head_output", "logits_sup")
FIXTURES = {
    "r50_sk0_v2": dict(sk_ratio=0.0, proj_head_mode="nonlinear"),
    "r50_sk1_v2": dict(sk_ratio=0.0625, proj_head_mode="nonlinear"),
    "r50_v1": dict(sk_ratio=0.0, proj_head_mode="none"),
    "r50_sk0_v2_ft1": dict(sk_ratio=0.0, proj_head_mode="nonlinear", ft_proj_selector=1),
    "r50_sk0_v2_ft2": dict(sk_ratio=0.0, proj_head_mode="nonlinear", ft_proj_selector=2),
}


def set_official_flags(sk_ratio, proj_head_mode, ft_proj_selector=None, width=WIDTH,
                       image_size=IMAGE_SIZE, proj_dim=PROJ_DIM):
    """The official run.py flags for one fixture: pretraining with a linear head on h, or
    with `ft_proj_selector` the fine-tuning mode, its supervised head on that head layer.

    `width_multiplier` is an integer flag there; the official layers compute 64 * width
    as they are built, so the fraction is set on the parsed flags like the rest.
    """
    finetune = ft_proj_selector is not None
    values = dict(
        train_mode="finetune" if finetune else "pretrain",
        lineareval_while_pretraining=not finetune, resnet_depth=50,
        width_multiplier=width, sk_ratio=sk_ratio, se_ratio=0.0,
        proj_head_mode=proj_head_mode, num_proj_layers=3,
        ft_proj_selector=ft_proj_selector or 0,
        proj_out_dim=proj_dim, image_size=image_size, global_bn=False,
        batch_norm_decay=0.9, use_blur=False, fine_tune_after_block=-1)
    for key, value in values.items():
        setattr(FLAGS, key, value)


def randomize(model, rng):
    """Random values in every variable, on scales that keep activations finite."""
    for variable in model.variables:
        name, shape = variable.name, variable.shape.as_list()
        if "moving_variance" in name:
            value = rng.uniform(0.5, 2.0, shape)
        elif "gamma" in name:
            value = rng.uniform(0.5, 1.5, shape)
        elif "moving_mean" in name or "beta" in name or "bias" in name:
            value = rng.normal(0.0, 0.2, shape)
        else:  # kernels: He scaling over the fan-in
            fan_in = int(np.prod(shape[:-1]))
            value = rng.normal(0.0, np.sqrt(2.0 / fan_in), shape)
        variable.assign(value.astype(np.float32))


def v1_model_class(model_lib):
    """The official Model, called without the projection-head unpacking (see docstring)."""
    class V1Model(model_lib.Model):
        def __call__(self, inputs, training):
            hiddens = self.resnet_model(inputs, training=training)
            self._projection_head(hiddens, training)
            return None, self.supervised_head(hiddens, training)
    return V1Model


def save_saved_model(module, path, tf):
    """`tf.saved_model.save` as tf2/run.py's `save`, with saved_model.pb gzipped.

    The graph of a ResNet-50 is 4 MB of protobuf (0.25 MB gzipped) at any width, ten
    times the variables; the tests unpack it beside the variables before importing.
    """
    tf.saved_model.save(module, path)
    pb = os.path.join(path, "saved_model.pb")
    with open(pb, "rb") as source, gzip.open(pb + ".gz", "wb", compresslevel=9) as target:
        shutil.copyfileobj(source, target)
    os.remove(pb)


def make_fixture(name, options, images, run, model_lib, tf):
    """Build, randomise, save one official model and record its outputs on `images`."""
    tf.keras.backend.clear_session()  # the output names assume the first "resnet" layer
    set_official_flags(**options)
    v1 = options["proj_head_mode"] == "none"
    model_class = v1_model_class(model_lib) if v1 else model_lib.Model
    model = model_class(num_classes=NUM_CLASSES)
    inputs = tf.constant(images.astype(np.float32) / 255.0)
    model(inputs, training=False)  # builds the variables
    randomize(model, np.random.default_rng(sum(map(ord, name))))
    module = run.build_saved_model(model, include_projection_head=not v1)
    path = os.path.join(FLAGS.output_dir, name)
    outputs = {"images": images}
    for key, value in module(inputs, False).items():
        outputs[key] = value.numpy()
    save_saved_model(module, os.path.join(path, "saved_model"), tf)
    # BN on batch statistics; this call also moves the moving averages, hence after saving
    for key, value in module(inputs, True).items():
        if key in TRAINING_KEYS:
            outputs[f"{key}_trainable"] = value.numpy()
    np.savez_compressed(os.path.join(path, "outputs.npz"), **outputs)
    print(name, {key: value.shape for key, value in outputs.items()})


def make_bench_model(run, model_lib, tf):
    """The released ResNet-50 1x sk0's architecture with random weights, for timing."""
    set_official_flags(0.0, "nonlinear", width=1, image_size=224, proj_dim=128)
    model = model_lib.Model(num_classes=1000)
    model(tf.zeros([1, 224, 224, 3]), training=False)
    randomize(model, np.random.default_rng(0))
    tf.saved_model.save(run.build_saved_model(model), FLAGS.bench_dir)


def official_kd_loss(official_dir, tf):
    """The official distillation notebook's `add_kd_loss`, taken from its cell unmodified."""
    notebook = os.path.join(official_dir, "colabs", "distillation_self_training.ipynb")
    with open(notebook) as f:
        cells = ["".join(cell["source"]) for cell in json.load(f)["cells"]
                 if cell["cell_type"] == "code"]
    for source in (cell for cell in cells if "def add_kd_loss" in cell):
        for node in ast.parse(source).body:
            if isinstance(node, ast.FunctionDef) and node.name == "add_kd_loss":
                namespace = {"tf": tf}
                exec(compile(ast.Module([node], []), notebook, "exec"), namespace)
                return namespace["add_kd_loss"]
    raise ValueError(f"no add_kd_loss in {notebook}")


def make_kd_loss_fixture(tf):
    """kd_loss.npz: the notebook's loss on fixed teacher and student logits (a batch of 5,
    7 classes) at each of `temperatures`, with TensorFlow 2.15's float32 arithmetic."""
    add_kd_loss = official_kd_loss(os.path.abspath(FLAGS.official_dir), tf)
    rng = np.random.default_rng(0)
    teacher, student = (rng.normal(0, 3, (5, 7)).astype(np.float32) for _ in range(2))
    temperatures = np.array([0.5, 1.0, 2.0, 3.0], np.float32)
    losses = [float(add_kd_loss(tf.constant(student), tf.constant(teacher), float(t)))
              for t in temperatures]
    np.savez(os.path.join(FLAGS.output_dir, "kd_loss.npz"), teacher_logits=teacher,
             student_logits=student, temperatures=temperatures,
             losses=np.array(losses, np.float32))


def main(argv):
    del argv
    sys.path.insert(0, os.path.abspath(FLAGS.official_dir))
    import tensorflow as tf
    import model as model_lib
    import run

    if FLAGS.bench_dir:
        make_bench_model(run, model_lib, tf)
        return
    if not FLAGS.fixtures or "kd_loss" in FLAGS.fixtures:
        make_kd_loss_fixture(tf)
    images = np.random.default_rng(0).integers(0, 256, (3, IMAGE_SIZE, IMAGE_SIZE, 3), np.uint8)
    for name, options in FIXTURES.items():
        if FLAGS.fixtures and name not in FLAGS.fixtures:
            continue
        make_fixture(name, options, images, run, model_lib, tf)


if __name__ == "__main__":
    flags.mark_flag_as_required("official_dir")
    app.run(main)
