"""The version of caffe2py, which every generated module names in its header."""

__version__ = "0.1.0"
