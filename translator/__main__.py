"""``python -m translator``: the caffe2py command line."""

import sys

from translator.cli import main

sys.exit(main())
