"""Weighted kNN classification of features (Wu et al. 2018, as lightly and solo-learn).

Cosine similarity; the k nearest training features vote for their class with weight
exp(sim / temperature).
"""
import numpy as np
import tensorflow as tf

from keras_simclr.evaluation.features import labelled, top_k_accuracy


def knn_classify(train_x, train_y, eval_x, num_classes, k=200, temperature=0.1,
                 batch_size=1024):
    """Class scores of each eval feature from its k nearest training features (cosine)."""
    train = tf.math.l2_normalize(tf.constant(train_x, tf.float32), axis=1)
    train_y = tf.constant(train_y, tf.int64)
    k = min(k, int(train.shape[0]))
    scores = []
    for start in range(0, len(eval_x), batch_size):
        queries = tf.constant(eval_x[start:start + batch_size], tf.float32)
        queries = tf.math.l2_normalize(queries, axis=1)
        similarity, index = tf.math.top_k(tf.matmul(queries, train, transpose_b=True), k)
        weights = tf.exp(similarity / temperature)
        votes = tf.one_hot(tf.gather(train_y, index), num_classes) * weights[..., None]
        scores.append(tf.reduce_sum(votes, axis=1).numpy())
    return np.concatenate(scores)


def knn_accuracy(train_x, train_y, eval_x, eval_y, k=200, temperature=0.1):
    """Weighted kNN top-1 and top-5; examples with label < 0 are dropped."""
    train_x, train_y, eval_x, eval_y = labelled(train_x, train_y, eval_x, eval_y)
    num_classes = int(max(train_y.max(), eval_y.max())) + 1
    scores = knn_classify(train_x, train_y, eval_x, num_classes, k, temperature)
    return {
        "top1": top_k_accuracy(scores, eval_y, 1),
        "top5": top_k_accuracy(scores, eval_y, 5),
        "k": int(min(k, len(train_x))),
        "temperature": float(temperature),
        "num_train": int(len(train_x)),
        "num_eval": int(len(eval_x)),
    }
