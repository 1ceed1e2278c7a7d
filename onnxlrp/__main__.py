"""``python -m onnxlrp``: the command line (see :mod:`onnxlrp.cli`)."""

import sys

from onnxlrp.cli import main

sys.exit(main())
