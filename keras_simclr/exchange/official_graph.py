"""Which layer of its projection head an official model's supervised head reads.

The official tf2 code (github.com/google-research/simclr, `tf2/model.py`) gives its
supervised head `hiddens_list[ft_proj_selector]`: h (`proj_head_input`) in pretraining,
the output of layer K of the projection head in SimCLRv2's fine-tuning (K=1 in the
paper). The variables are the same either way; the SavedModel's function graph
(`saved_model.pb`) shows it. `run.py` names the two tensors every release returns,
`head_supervised/logits_sup` and `projection_head/proj_head_input` (its
`get_salient_tensors_dict` looks them up by these names), so the graph is read as a
protobuf, without running it: from `logits_sup` back to the supervised head's MatMul,
then from that MatMul's input back to `proj_head_input`, counting the projection head's
MatMuls on the way.
"""
import os

import tensorflow as tf
from google.protobuf import message
from tensorflow.core.protobuf import saved_model_pb2

LOGITS = "head_supervised/logits_sup"
HEAD_INPUT = "projection_head/proj_head_input"
GRAPH_FILE = "saved_model.pb"


class UnreadableGraph(ValueError):
    """The graph does not tell which layer the supervised head reads; the message says why."""


def supervised_head_layer(saved_model_dir: str) -> tuple[int, bool]:
    """(K, relu) for the official SavedModel in `saved_model_dir`.

    K is how many projection-head layers lie between h and the supervised head (0: it
    reads h); relu whether the tensor it reads comes out of a ReLU (the hidden layers'
    outputs do, h and the last layer's output do not). Every function of the graph that
    computes `logits_sup` must agree. Raises UnreadableGraph otherwise.
    """
    found = set()
    for meta_graph in _read(saved_model_dir).meta_graphs:
        for function in meta_graph.graph_def.library.function:
            nodes = {node.name: node for node in function.node_def}
            if LOGITS in nodes:
                found.add(_walk(nodes))
    if not found:
        raise UnreadableGraph(f"no function of its graph computes {LOGITS}")
    if len(found) > 1:
        layers = " and ".join(str(k) for k, _ in sorted(found))
        raise UnreadableGraph(f"its functions disagree (layers {layers})")
    return found.pop()


def _read(saved_model_dir: str):
    path = os.path.join(saved_model_dir, GRAPH_FILE)
    if not tf.io.gfile.exists(path):
        raise UnreadableGraph(f"it has no {GRAPH_FILE}, the graph that records it")
    saved = saved_model_pb2.SavedModel()
    try:
        with tf.io.gfile.GFile(path, "rb") as f:
            saved.ParseFromString(f.read())
    except (message.DecodeError, tf.errors.OpError) as error:
        raise UnreadableGraph(f"its {GRAPH_FILE} does not parse ({error})") from None
    return saved


def _chain(nodes: dict, node):
    """`node`, then the producer of its first input, and so on (a function argument ends
    the chain; so does a cycle, which a function body should not have)."""
    for _ in range(len(nodes)):
        yield node
        if not node.input:
            return
        node = nodes.get(node.input[0].lstrip("^").split(":")[0])
        if node is None:
            return


def _walk(nodes: dict) -> tuple[int, bool]:
    """(K, relu) from `logits_sup` back to `proj_head_input` in one function."""
    chain = _chain(nodes, nodes[LOGITS])
    for node in chain:  # logits_sup <- BiasAdd <- MatMul of the supervised head
        if node.op == "MatMul":
            break
    layers, relu = 0, None
    for node in chain:
        if node.name == HEAD_INPUT:
            return layers, bool(relu)
        if relu is None and node.op not in ("Identity", "StopGradient"):
            relu = node.op == "Relu"
        layers += node.op == "MatMul"
    raise UnreadableGraph(f"the input of the supervised head does not lead back to "
                          f"{HEAD_INPUT}")
