"""caffe2py: translate Caffe models (prototxt + caffemodel) into readable Keras 3 modules."""

__version__ = "0.1.0"
