"""bench/profile_step.py: spans scaled to CPU time, ops grouped, the table, a real trace read."""
import argparse
import glob
import os

import pytest
import tensorflow as tf
from tensorflow.tsl.profiler.protobuf import xplane_pb2

from bench import profile_step


def test_spans_are_scaled_to_the_step_cpu_time_and_take_the_median():
    conv, cast = ("m/conv/Conv2D", "_MklNativeConv2D"), ("m/Cast", "Cast")
    steps = [({conv: [30.0], cast: [10.0]}, 0.020),  # 40 ms of spans, 20 ms of CPU
             ({conv: [15.0, 15.0], cast: [10.0]}, 0.040),  # two runs of conv per step
             ({conv: [60.0], cast: [20.0]}, 0.040)]
    ms = profile_step.scaled_ms(steps)
    assert ms[conv] == pytest.approx(30.0)  # median of 15, 30, 30
    assert ms[cast] == pytest.approx(10.0)


@pytest.mark.parametrize("name,kind,group", [
    ("gradient_tape/m/stage1_conv/Conv2DBackpropFilter", "_MklNativeConv2DBackpropFilter",
     "convolution backward (filter)"),
    ("m/stem_conv/convolution", "_MklNativeConv2D", "convolution forward"),
    ("m/stage4_block1_1_conv/MatMul", "_MklMatMul", "matmul / einsum (SmallMapConv2D, head)"),
    ("m/stem_bn/FusedBatchNormV3", "_MklFusedBatchNormV3", "BatchNormalization"),
    ("gradient_tape/m/projection_head_1/bn_0_1/moments/Mean", "Mean", "BatchNormalization"),
    ("StatefulPartitionedCall/lars/Mul_3", "Mul", "optimizer (LARS)"),
    ("m/Cast_2", "Cast", "cast"),
    ("m/loss/Exp", "Exp", "loss and the rest"),
])
def test_ops_are_grouped(name, kind, group):
    assert profile_step.group_of(name, kind) == group


def test_table_gives_groups_total_and_ratio():
    summaries = {
        "float32": profile_step.summarise({("a/conv", "_MklNativeConv2D"): 80.0,
                                           ("a/Exp", "Exp"): 20.0}),
        "mixed_bfloat16": profile_step.summarise({("a/conv", "_MklNativeConv2D"): 20.0,
                                                  ("a/Exp", "Exp"): 20.0}),
    }
    args = argparse.Namespace(precisions=["float32", "mixed_bfloat16"], top=2)
    lines = profile_step.table(args, summaries)
    assert "| convolution forward | 80 (80%) | 20 (50%) | 0.25x |" in lines
    assert "| **total** | 100 | 40 | 0.40x |" in lines
    assert "| cast | 0 (0%) | 0 (0%) | - |" in lines  # no ratio to nothing
    assert len(lines[0].split("|")) == len(lines[1].split("|"))


def test_reads_the_ops_of_a_profiler_trace(tmp_path):
    x = tf.random.uniform((64, 64))
    tf.profiler.experimental.start(str(tmp_path))
    tf.function(lambda v: tf.nn.relu(tf.matmul(v, v)))(x)
    tf.profiler.experimental.stop()
    path = glob.glob(os.path.join(tmp_path, "**", "*.xplane.pb"), recursive=True)[0]
    kinds = {kind for _, kind in profile_step.op_spans(path)}
    assert any("MatMul" in kind for kind in kinds) and "Relu" in kinds


def test_only_op_spans_are_read_not_the_runtime_spans_holding_them(tmp_path):
    """Runtime spans ("KernelAndDeviceFunc::Run", "ExecutorState::Process") and function
    calls contain the ops' spans: counting them would count the ops twice."""
    space = xplane_pb2.XSpace()
    plane = space.planes.add(name="/host:CPU")
    names = ["m/conv/Conv2D:_MklNativeConv2D", "KernelAndDeviceFunc::Run",
             "ExecutorState::Process", "StatefulPartitionedCall:StatefulPartitionedCall",
             "EagerLocalExecute: __inference_step_11"]
    line = plane.lines.add()
    for index, name in enumerate(names, start=1):
        plane.event_metadata[index].name = name
        line.events.add(metadata_id=index, duration_ps=int(2e9))
    path = tmp_path / "trace.xplane.pb"
    path.write_bytes(space.SerializeToString())
    assert profile_step.op_spans(str(path)) == {("m/conv/Conv2D", "_MklNativeConv2D"): [2.0]}
