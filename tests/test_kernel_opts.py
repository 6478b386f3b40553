"""The searched kernel table (tinystory/kernel_opts.py): every entry still matches a kernel of the seed training step,
a table's opts are applied (and the kernel still split over cores) with the same numbers to float rounding, and a
bad table is a one-line error. Each case runs in its own process: tinygrad caches compiled kernels per process."""
import json, os, subprocess, sys
from pathlib import Path
import numpy as np
import pytest
from tinystory import kernel_opts

ROOT = Path(__file__).resolve().parent.parent

def run(script: str, **env) -> dict:
  p = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=600,
                     env={**os.environ, "PARALLEL": "0", **env})
  assert p.returncode == 0, p.stderr[-3000:]
  return json.loads(p.stdout.strip().splitlines()[-1])

SEED_STEP = """
import json, numpy as np
from tinystory import bench, kernel_opts, SEED_MODEL
bench.render_only()
from tinystory.model import ModelArgs, Transformer
from tinystory.train import TrainConfig, TrainSteps
model = Transformer(ModelArgs(**SEED_MODEL), seed=1337)
steps = TrainSteps(model, TrainConfig(batch_size=64, max_seq_len=SEED_MODEL["max_seq_len"], compile=False))
x = np.zeros((64, SEED_MODEL["max_seq_len"]), np.int64)
steps.micro_step(x, x)
print(json.dumps({"used": sorted(kernel_opts.used), "table": sorted(kernel_opts.table())}))
"""

def test_every_entry_matches_a_kernel_of_the_seed_step():
  """The seed config's forward + backward, rendered for the CPU on tinygrad's NULL device (nothing is compiled or
  run): each of the table's kernels is among them. A model change that alters one of those kernels fails here: the
  table is stale, rerun `python -m tinystory.kernel_opts` on a quiet machine."""
  out = run(SEED_STEP, DEV="NULL:CLANG:x86_64,native")
  assert len(out["table"]) >= 8 and out["used"] == out["table"]

MATMUL = """
import json, numpy as np
import tinygrad.codegen as codegen, tinygrad.codegen.opt.postrange as postrange
from tinystory import kernel_opts
heuristic, seen = postrange.apply_opts, {}
def record(ast, ren, beam=0):  # tinygrad's own choice, noted: the key and opts of each kernel it optimises
  out = heuristic(ast, ren, beam)
  seen[kernel_key(ast)] = [o.op.name for o in out.arg.applied_opts]
  return out
kernel_key = kernel_opts.kernel_key
postrange.apply_opts = codegen.apply_opts = record
applied, ours = {}, kernel_opts.apply_opts
def note(ast, ren, beam=0):  # the table's choice, noted
  out = ours(ast, ren, beam)
  applied[kernel_key(ast)] = [(o.op.name, o.axis, o.arg) for o in out.arg.applied_opts]
  return out
kernel_opts.apply_opts = note
kernel_opts.install()
from tinygrad import Tensor
rng = np.random.default_rng(0)
x, w = rng.standard_normal((512, 64)).astype(np.float32), rng.standard_normal((96, 64)).astype(np.float32)
y = (Tensor(x) @ Tensor(w).T).numpy()
print(json.dumps({"seen": seen, "applied": applied, "used": sorted(kernel_opts.used), "y": y.tolist()}))
"""
OPTS = [["UPCAST", 0, 4], ["UPCAST", 1, 2], ["UNROLL", 0, 4]]

def test_a_tables_opts_are_applied_with_the_same_numbers(tmp_path):
  """A matmul with tinygrad's heuristics, then with a table that names its kernel: the table's opts are applied, the
  kernel is still split over the cores (THREAD), and the product equals numpy's float64 one to float32 rounding."""
  empty = tmp_path / "empty.json"
  empty.write_text(json.dumps({"kernels": []}))
  env = {"NUM_CPU_THREADS": "2"}
  before = run(MATMUL, TINYSTORY_KERNEL_OPTS=str(empty), **env)
  (key, heuristic), = [(k, o) for k, o in before["seen"].items()]  # the one kernel: the matmul
  assert "THREAD" in heuristic and not before["used"]
  table = tmp_path / "table.json"
  table.write_text(json.dumps({"kernels": [{"key": key, "opts": OPTS}]}))
  after = run(MATMUL, TINYSTORY_KERNEL_OPTS=str(table), **env)
  assert after["used"] == [key] and not after["seen"]  # tinygrad's heuristics never saw it
  assert after["applied"][key] == [*OPTS, ["THREAD", 0, 2]]
  rng = np.random.default_rng(0)
  x, w = rng.standard_normal((512, 64)), rng.standard_normal((96, 64))
  for y in (before["y"], after["y"]): np.testing.assert_allclose(np.array(y), x @ w.T, rtol=1e-5, atol=1e-5)

def test_off_and_bad_tables(tmp_path, monkeypatch):
  monkeypatch.setenv("TINYSTORY_KERNEL_OPTS", "0")
  assert kernel_opts.table() == {} and kernel_opts.install() is False
  monkeypatch.setenv("TINYSTORY_KERNEL_OPTS", "1")
  assert kernel_opts.table() and all(isinstance(o, list) for o in kernel_opts.table().values())
  for text in (None, "not json", '{"entries": []}'):
    bad = tmp_path / f"bad{len(text or '')}.json"
    if text is not None: bad.write_text(text)
    monkeypatch.setenv("TINYSTORY_KERNEL_OPTS", str(bad))
    with pytest.raises(kernel_opts.UserError, match=rf"^TINYSTORY_KERNEL_OPTS={bad}: not a kernel table \(.*\); "
                                                     r"expected 0, 1 or a file written by python -m tinystory.kernel_opts$"):
      kernel_opts.table()
