"""Subprocess side of tests/test_gradient_cache.py: plain and chunked steps on 2 CPU replicas.

Logical CPU devices must be configured before TensorFlow initialises, hence a fresh
interpreter. Prints one JSON line: the largest relative difference between the summed
gradients of a plain and a chunked step, and both losses.

    python tests/_chunked_helper.py CHUNK_SIZE
"""
import json
import os
import sys

# This checkout's package, not whichever one `pip install -e` last pointed at.
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import keras_simclr  # noqa: E402,F401  (runtime flags before TensorFlow is imported)
from keras_simclr.training import distribute  # noqa: E402
from keras_simclr.views.makers import views_of_input  # noqa: E402


def main(chunk_size):
    import numpy as np
    import tensorflow as tf

    from test_gradient_cache import no_bn_simclr, relative_difference

    distribute.configure_cpu_replicas(2)
    strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    with strategy.scope():
        model = no_bn_simclr(seed=0)
    rng = np.random.default_rng(5)
    views = {k: rng.uniform(0, 1, (16, 8, 8, 3)).astype("float32") for k in ("view_1", "view_2")}
    dataset = strategy.experimental_distribute_dataset(
        tf.data.Dataset.from_tensors(views))
    batch = next(iter(dataset))

    def step(x, chunk):
        model.chunk_size = chunk
        views = views_of_input(model.augmenter, x)
        method = model._cached_gradients if chunk else model._plain_gradients
        _, gradients, loss, _, _ = method(views, None, strategy.num_replicas_in_sync)
        return gradients, loss

    results = {}
    for name, chunk in (("plain", None), ("chunked", chunk_size)):
        gradients, loss = strategy.run(step, args=(batch, chunk))
        results[name] = (
            [strategy.reduce("SUM", g, axis=None).numpy() for g in gradients],
            strategy.reduce("MEAN", loss, axis=None).numpy(),
        )
    print(json.dumps({
        "max_relative_difference": max(
            relative_difference(a, b) for a, b in zip(results["plain"][0], results["chunked"][0])),
        "plain_loss": float(results["plain"][1]),
        "chunked_loss": float(results["chunked"][1]),
    }))


if __name__ == "__main__":
    main(int(sys.argv[1]))
