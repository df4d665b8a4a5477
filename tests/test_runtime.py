"""A quiet start: TensorFlow's load-time notices dropped, everything else kept."""
import os
import subprocess
import sys

from keras_simclr.utils import runtime as _runtime

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CODE = "import keras_simclr, tensorflow as tf; tf.config.list_physical_devices(); print('ok')"


def test_drop_load_notices_keeps_every_other_line():
    notices = (
        "WARNING: All log messages before absl::InitializeLog() is called are written to STDERR\n"
        "I0000 00:00:1795862911.500949    3772 port.cc:153] oneDNN custom operations are on.\n"
        "I0000 00:00:1795862911.501518    3772 cudart_stub.cc:31] Could not find cuda drivers\n"
        "I0000 00:00:1795862920.604177    3772 cpu_feature_guard.cc:227] This TensorFlow binary\n"
        "To enable the following instructions: AVX2 FMA, in other operations, rebuild ...\n")
    others = ("E0000 00:00:1795862920.604177    3772 other.cc:12] a real error\n"
              "Traceback (most recent call last):\n"
              "  a Python warning: port.cc:153] quoted\n")
    assert _runtime.drop_load_notices(notices + others + notices) == others


def test_import_and_device_setup_print_nothing_unless_debugging():
    # They printed the oneDNN notice, "Could not find cuda drivers" (each twice) and, on a
    # machine without a GPU, "failed call to cuInit".
    env = {k: v for k, v in os.environ.items()
           if k not in ("TF_CPP_MIN_LOG_LEVEL", "KERAS_SIMCLR_DEBUG")}
    quiet = subprocess.run([sys.executable, "-c", CODE], cwd=ROOT, capture_output=True,
                           text=True, timeout=120, env=env)
    assert (quiet.stdout, quiet.stderr) == ("ok\n", "")
    debug = subprocess.run([sys.executable, "-c", CODE], cwd=ROOT, capture_output=True,
                           text=True, timeout=120, env={**env, "KERAS_SIMCLR_DEBUG": "1"})
    assert debug.stdout == "ok\n" and "oneDNN" in debug.stderr  # oneDNN is on: its notice
