"""Runs an app with the toy plug-ins of tests/ registered: `python tests/_toy_apps.py APP ...`.

Each toy is one file (toy_objective.py, toy_views.py, toy_backbone.py) plus its one
registration line below; the apps themselves are not changed. A project's own plug-ins
are run the same way: import, register, then the app's `run()`.
"""
import importlib
import os
import sys

TESTS = os.path.dirname(os.path.abspath(__file__))
sys.path[:0] = [os.path.dirname(TESTS), TESTS]

from keras_simclr import losses, views  # noqa: E402
from keras_simclr.networks import backbones
from toy_backbone import tiny_convnet  # noqa: E402
from toy_objective import Alignment  # noqa: E402
from toy_views import Mirror, NoisyFlips  # noqa: E402

losses.register_objective("toy_alignment", Alignment)
views.register_view_maker("toy_noisy_flips", NoisyFlips)
views.register_view_maker("toy_mirror", Mirror)
backbones.register_family("toy_convnet", tiny_convnet)

if __name__ == "__main__":
    app = importlib.import_module(f"apps.{sys.argv.pop(1)}")
    app.run()
