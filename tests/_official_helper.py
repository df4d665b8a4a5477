"""Subprocess side of tests/test_official.py: one fit step of an imported official model
under a 2-replica MirroredStrategy on logical CPUs, which must be configured before
TensorFlow initialises. Usage: python tests/_official_helper.py SOURCE OUT.json
"""
import json
import os
import sys

# This checkout's package, not whichever one `pip install -e` last pointed at.
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import keras_simclr  # noqa: E402,F401  (sets the TensorFlow runtime flags first)
from keras_simclr.training import distribute  # noqa: E402


def main(source, out_path):
    strategy = distribute.make_strategy("mirrored", cpu_replicas=2)
    import keras
    import numpy as np
    import tensorflow as tf

    from keras_simclr.exchange import official

    with strategy.scope():
        model, _ = official.load(source)
        model.compile(optimizer=keras.optimizers.SGD(0.01))
    before = [keras.ops.convert_to_numpy(v) for v in model.encoder.trainable_variables]
    rng = np.random.default_rng(0)
    views = {f"view_{i}": rng.uniform(0, 1, (4, 64, 64, 3)).astype(np.float32) for i in (1, 2)}
    labels = rng.integers(0, 10, 4)
    history = model.fit(tf.data.Dataset.from_tensors((views, labels)), epochs=1, verbose=0,
                        shuffle=False)
    changed = sum(not np.array_equal(b, keras.ops.convert_to_numpy(v))
                  for b, v in zip(before, model.encoder.trainable_variables))
    mirrored = isinstance(model.encoder.trainable_variables[0].value,
                          tf.distribute.DistributedValues)
    with open(out_path, "w") as f:
        json.dump({"replicas": strategy.num_replicas_in_sync, "changed": changed,
                   "variables": len(before), "mirrored": bool(mirrored),
                   "loss": float(history.history["loss"][-1]),
                   "probe_loss": float(history.history["probe_loss"][-1])}, f)


if __name__ == "__main__":
    main(*sys.argv[1:])
