import os
# numpy's OpenBLAS threads fight tinygrad's kernels for the two cores of a small machine: the tests' small linear
# algebra runs faster on one thread
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
