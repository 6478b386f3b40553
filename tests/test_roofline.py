"""bench --roofline: each kernel's family from what it computes, the step's kernels summed by family, the machine's
own peaks, and the table."""
import numpy as np
import pytest
from tinygrad import Tensor
from tinystory import bench
from tinystory.config import SEED_MODEL, ModelArgs
from tinystory.replay import ReplayJit

def programs(fxn, *shapes) -> list:
  """The compiled kernels of fxn on fixed inputs of `shapes`, as the training step's replay holds them."""
  inputs = tuple(Tensor(np.random.default_rng(0).standard_normal(s).astype(np.float32)).realize() for s in shapes)
  jit = ReplayJit(lambda *xs: fxn(*xs).contiguous().realize(), inputs)
  for _ in range(3): jit()
  return jit.replay.programs()

@pytest.mark.parametrize("family, fxn, shapes", [
  ("matmul", lambda a, b: a @ b, [(64, 64), (64, 64)]),
  ("reduction", lambda a: a.sum(-1), [(64, 256)]),
  ("elementwise", lambda a: (a * 3).exp(), [(64, 64)]),
  ("copy", lambda a: a.T, [(64, 128)]),
  ("dropout RNG", lambda a: a.rand_like() < 0.5, [(64, 64)]),
])
def test_each_kernel_family_is_told_from_what_the_kernel_computes(family, fxn, shapes):
  families = [bench.kernel_family(p) for p in programs(fxn, *shapes)]  # the random bits take a few small kernels more
  assert family in families and ("dropout RNG" in families) == (family == "dropout RNG")

def test_the_roofline_of_a_step_sums_every_kernel_of_it_by_family():
  cfg = {**SEED_MODEL, "dim": 32, "n_layers": 1, "n_heads": 4, "n_kv_heads": 4, "vocab_size": 40, "max_seq_len": 16}
  steps, batch = bench.train_driver(cfg, 4)
  for _ in range(3): steps.micro_step(*batch()), steps.update(1e-4)
  r = bench.step_roofline(steps, batch, cfg, 4)
  fams = r["families"]
  n_kernels = sum(len(jit.replay.programs()) for jit in steps.compiled())
  assert sum(f["kernels"] for f in fams.values()) == n_kernels
  assert sum(f["ms"] for f in fams.values()) == pytest.approx(r["micro_ms"] + r["update_ms"])
  assert {"matmul", "elementwise", "reduction", "dropout RNG"} <= fams.keys() <= {*bench.FAMILIES}
  assert all(f["ms"] > 0 and f["bytes"] > 0 for f in fams.values()) and fams["matmul"]["flops"] > fams["elementwise"]["flops"]
  # the peaks: one sgemm rate per matmul shape of the model, and a copy's bandwidth
  h = ModelArgs(**cfg).hidden_size
  assert list(r["sgemm_gflops"]) == ["64x32x32", f"64x32x{h}", f"64x{h}x32", "64x32x40", f"32x64x{h}"]
  assert r["sgemm_peak_gflops"] == max(r["sgemm_gflops"].values()) > 0 and r["copy_gbps"] > 0

def test_the_roofline_table_puts_each_family_beside_the_peaks():
  fam = lambda k, ms, gf, gb: {"kernels": k, "ms": ms, "flops": gf * 1e9, "bytes": gb * 1e9}
  res = {"roofline": {"families": {"elementwise": fam(200, 300.0, 4.0, 3.0), "matmul": fam(150, 1000.0, 50.0, 3.0)},
                      "micro_ms": 1290.0, "update_ms": 10.0, "model_flops": 40e9,
                      "sgemm_gflops": {"8192x128x128": 200.0, "128x8192x352": 400.0}, "sgemm_peak_gflops": 400.0,
                      "runs": 20, "copy_mb": 64, "cores": 2, "copy_gbps": 30.0}}
  lines = bench.roofline_table(res)
  assert lines[0].startswith("roofline of one replayed training step (forward + backward 1,290 ms, clip + AdamW 10 ms)")
  assert lines[1].split() == ["family", "kernels", "ms", "share", "GFLOP", "GB", "GFLOP/s", "GB/s", "of", "sgemm", "of", "copy"]
  # slowest family first, then the whole step; the rates are GFLOP / s and GB / s, their shares of the peaks
  assert lines[2].split() == ["matmul", "150", "1000.0", "76.9%", "50.00", "3.00", "50.0", "3.0", "12.5%", "10.0%"]
  assert lines[3].split() == ["elementwise", "200", "300.0", "23.1%", "4.00", "3.00", "13.3", "10.0", "3.3%", "33.3%"]
  assert lines[4].split() == ["step", "350", "1300.0", "100.0%", "54.00", "6.00", "41.5", "4.6", "10.4%", "15.4%"]
  assert lines[5] == ("this machine, measured in the same process: numpy sgemm 8192x128x128 200, 128x8192x352 400 GFLOP/s "
                      "(M x K x N, best of 20); a 64 MB copy on 2 cores 30.0 GB/s")
  assert lines[6] == ("the model's arithmetic (llama2.c's 6N + 12LHQT per token) is 40.0 GFLOP: 100 ms at the best sgemm "
                      "rate (400 GFLOP/s); the step takes 1,300 ms, 13.0x that floor, 7.7% of the sgemm peak")
  assert bench.roofline_table({}) == []
