import os
# numpy's OpenBLAS threads fight tinygrad's kernels for the two cores of a small machine: the tests' small linear
# algebra runs faster on one thread
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import logging, pytest
from tinystory.log import logger

@pytest.fixture
def logged():
  """The messages the package logs during a test."""
  lines, h = [], logging.Handler()
  h.emit = lambda record: lines.append(record.getMessage())
  logger.addHandler(h)
  yield lines
  logger.removeHandler(h)
