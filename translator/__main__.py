"""``python -m caffe2py``: the caffe2py command line."""

import sys

from .cli import main

sys.exit(main())
