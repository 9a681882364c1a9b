"""caffe2py: translate Caffe models (prototxt + caffemodel) into readable Keras 3 modules."""

from .api import TranslatedNet, convert_weights, translate
from .errors import TranslationError
from .version import __version__

__all__ = ["TranslatedNet", "TranslationError", "__version__", "convert_weights", "translate"]
