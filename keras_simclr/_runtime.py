"""Process-wide runtime settings that must happen before TensorFlow is imported.

TensorFlow leaves oneDNN off on AMD CPUs; turning it on makes ResNet training 4-10x faster
on the CPUs this project is developed on. A value the user already set is respected.
"""
import os

os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")
