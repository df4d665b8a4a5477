"""Process-wide runtime settings that must happen before TensorFlow is imported.

TensorFlow leaves oneDNN off on AMD CPUs; turning it on makes ResNet training 4-10x faster
on the CPUs this project is developed on. A value the user already set is respected.

A quiet start: TensorFlow's C++ logging is limited to FATAL (`TF_CPP_MIN_LOG_LEVEL=3`; at
level 2 a CPU-only machine still gets an ERROR line `failed call to cuInit` when the
devices are set up), and the notices that TensorFlow's shared libraries write while they
load, through absl's C++ logging before it is initialised (the oneDNN notice, "Could not
find cuda drivers", the CPU instruction notice), are dropped from what `import tensorflow`
writes to stderr: no environment variable controls them. Anything else written during the
import is passed on. `KERAS_SIMCLR_DEBUG=1` in the environment turns both off, and the
apps then keep absl's INFO log lines too.
"""
import os
import re
import sys
import tempfile

DEBUG = os.environ.get("KERAS_SIMCLR_DEBUG", "").lower() not in ("", "0", "false", "no")

os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")
if not DEBUG:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")

# Lines of TensorFlow's load-time notices, e.g.
# `I0000 00:00:1795862911.500949    3772 port.cc:153] oneDNN custom operations are on. ...`
LOAD_NOTICE = re.compile(
    r"WARNING: All log messages before absl::InitializeLog\(\) is called"
    r"|[IW]\d{4} [\d:.]+ +\d+ (port|cudart_stub|cpu_feature_guard)\.cc:\d+\]"
    r"|To enable the following instructions: ")


def drop_load_notices(text: str) -> str:
    """`text` without the lines of TensorFlow's load-time notices (see the module docstring).

    Args:
        text: what was written to stderr.

    Returns:
        The other lines, unchanged and in order.
    """
    return "".join(line for line in text.splitlines(keepends=True)
                   if not LOAD_NOTICE.match(line))


def import_tensorflow_quietly() -> None:
    """Import TensorFlow with its load-time notices dropped from stderr (file descriptor 2).

    A no-op when TensorFlow is already imported; a plain import under KERAS_SIMCLR_DEBUG or
    when stderr cannot be redirected.
    """
    if DEBUG or "tensorflow" in sys.modules:
        return
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError, AttributeError):
        import tensorflow  # noqa: F401
        return
    with tempfile.TemporaryFile() as captured:
        os.dup2(captured.fileno(), 2)
        try:
            import tensorflow  # noqa: F401
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            captured.seek(0)
            sys.stderr.write(drop_load_notices(captured.read().decode(errors="replace")))
            sys.stderr.flush()


import_tensorflow_quietly()
