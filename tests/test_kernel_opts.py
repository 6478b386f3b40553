"""The searched kernel table (tinystory/kernel_opts.py): every entry still matches a kernel of the seed training step,
a table's opts are applied (and the kernel still split over cores) with the same numbers to float rounding, and a
bad table is a one-line error. Each case runs in its own process: tinygrad caches compiled kernels per process."""
import json, os, re, subprocess, sys
from pathlib import Path
import numpy as np
import pytest
from tinystory import kernel_opts

ROOT = Path(__file__).resolve().parent.parent

def run(script: str, **env) -> dict:
  p = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=600,
                     env={**os.environ, "PARALLEL": "0", "TINYSTORY_KERNEL_OPTS": "1", **env})
  assert p.returncode == 0, p.stderr[-3000:]
  return json.loads(p.stdout.strip().splitlines()[-1])

# the eager step: TinyJit captures the kernels an eager step runs, so its ASTs are the compiled step's (the search took
# its keys from the compiled step; this test matched all of them when written)
SEED_STEP = """
import json, numpy as np
from tinystory import bench, kernel_opts
from tinystory.config import SEED_MODEL, ModelArgs, TrainConfig
from tinystory.device import choose_for
from tinystory.model import Transformer
from tinystory.train import TrainSteps
applied, scheduler = set(), kernel_opts.scheduler
def recording(ast, ren, opts):  # apply_opts schedules each of the table's kernels with its opts
  k = scheduler(ast, ren, opts)
  applied.add(kernel_opts.kernel_key(ast))
  return k
kernel_opts.scheduler = recording
with bench.render_only():
  model = Transformer(ModelArgs(**SEED_MODEL), seed=1337, grad_chunk=choose_for("CPU").grad_chunk)  # as train makes it
  steps = TrainSteps(model, TrainConfig(batch_size=64, max_seq_len=SEED_MODEL["max_seq_len"], compile=False))
  x = np.zeros((64, SEED_MODEL["max_seq_len"]), np.int64)
  steps.micro_step(x, x)
print(json.dumps({"applied": sorted(applied), "table": sorted(kernel_opts.table())}))
"""

@pytest.mark.slow
def test_every_entry_matches_a_kernel_of_the_seed_step():
  """The seed config's forward + backward, rendered for the CPU on tinygrad's NULL device (nothing is compiled or
  run): each of the table's kernels is among them. A model change that alters one of those kernels fails here: the
  table is stale, rerun `python tools/search_kernel_opts.py` on a quiet machine."""
  out = run(SEED_STEP, DEV="NULL:CLANG:x86_64,native")
  assert len(out["table"]) >= 8 and out["applied"] == out["table"]

MATMUL = """
import json, numpy as np
import tinygrad.codegen as codegen, tinygrad.codegen.opt.postrange as postrange, tinygrad.engine.realize as realize
from tinystory import kernel_opts
heuristic, seen = postrange.apply_opts, {}
def record(ast, ren, beam=0):  # tinygrad's own choices, by kernel key with the kernel's loop sizes (where compiled here)
  seen[kernel_opts.kernel_key(ast)] = [int(s) for s in kernel_opts.scheduler(ast, ren, []).full_shape]
  return heuristic(ast, ren, beam)
postrange.apply_opts = codegen.apply_opts = record
from tinygrad import Tensor
from tinystory.device import patched
rng = np.random.default_rng(0)
x, w = rng.standard_normal((512, 64)).astype(np.float32), rng.standard_normal((96, 64)).astype(np.float32)
with patched(attrs=kernel_opts.hooks()):
  y = Tensor(x) @ Tensor(w).T
  Tensor.realize(y, Tensor(x).sum(1))  # two kernels: with PARALLEL > 0 tinygrad compiles them in its worker processes
programs = [[[o.op.name, o.axis, o.arg] for o in p.src[0].arg.applied_opts] for p in realize.to_program_cache.values()]
print(json.dumps({"seen": seen, "programs": programs, "y": y.numpy().tolist()}))
"""
OPTS = [["UPCAST", 0, 4], ["UPCAST", 1, 2], ["UNROLL", 0, 4]]

@pytest.mark.parametrize("parallel,opts", [("0", OPTS), ("2", OPTS), ("2", [])])  # compiled here, and in tinygrad's spawned
def test_a_tables_opts_are_applied_with_the_same_numbers(tmp_path, parallel, opts):  # compile workers (its default)
  """A matmul with tinygrad's heuristics, then with a table that names its kernel: the table's opts (none at all, for
  clang's loop vectorizer: the search's "no opts") are applied, the kernel is still split over the cores (THREAD),
  and the product equals numpy's float64 one to float32 rounding."""
  env = {"NUM_CPU_THREADS": "2"}
  before = run(MATMUL, TINYSTORY_KERNEL_OPTS="0", **env)
  key, = [k for k, shape in before["seen"].items() if shape == [512, 96, 64]]  # the matmul's kernel
  assert opts + [["THREAD", 0, 2]] not in before["programs"]
  table = tmp_path / "table.json"
  table.write_text(json.dumps({"kernels": [{"key": key, "opts": opts}]}))
  after = run(MATMUL, TINYSTORY_KERNEL_OPTS=str(table), PARALLEL=parallel, **env)
  assert opts + [["THREAD", 0, 2]] in after["programs"] and key not in after["seen"]  # tinygrad's heuristics never saw it
  rng = np.random.default_rng(0)
  x, w = rng.standard_normal((512, 64)), rng.standard_normal((96, 64))
  for y in (before["y"], after["y"]): np.testing.assert_allclose(np.array(y), x @ w.T, rtol=1e-5, atol=1e-5)

def test_opts_that_do_not_fit_leave_the_kernel_to_tinygrad(tmp_path):
  """A table of one's own whose opts do not fit its kernel (an upcast of 7 on an axis of 512): tinygrad's choice."""
  before = run(MATMUL, TINYSTORY_KERNEL_OPTS="0")
  key, = [k for k, shape in before["seen"].items() if shape == [512, 96, 64]]
  table = tmp_path / "table.json"
  table.write_text(json.dumps({"kernels": [{"key": key, "opts": [["UPCAST", 0, 7]]}]}))
  after = run(MATMUL, TINYSTORY_KERNEL_OPTS=str(table))
  assert sorted(after["programs"]) == sorted(before["programs"]) and after["y"] == before["y"]

def test_off_and_bad_tables(tmp_path, monkeypatch):
  monkeypatch.setenv("TINYSTORY_KERNEL_OPTS", "0")
  assert kernel_opts.table() == {} and kernel_opts.hooks() == ()
  monkeypatch.setenv("TINYSTORY_KERNEL_OPTS", "1")
  assert kernel_opts.table() and all(isinstance(o, list) for o in kernel_opts.table().values())
  for text in (None, "not json", '{"entries": []}', '{"kernels": [{"key": "k", "opts": [["WIDEN", 0, 4]]}]}'):
    bad = tmp_path / f"bad{len(text or '')}.json"
    if text is not None: bad.write_text(text)
    monkeypatch.setenv("TINYSTORY_KERNEL_OPTS", str(bad))
    with pytest.raises(kernel_opts.UserError, match=rf"^TINYSTORY_KERNEL_OPTS={bad}: not a kernel table \(.*\); "
                                                     r"expected 0, 1 or a file written by tools/search_kernel_opts.py$"):
      kernel_opts.table()

@pytest.mark.slow
def test_a_resume_with_another_table_says_so(tmp_path, monkeypatch):
  """The table is part of what made a run's floats (the run's versions record it): a resume under another one logs
  that the continuation differs from an uninterrupted run by rounding."""
  from test_train import run_train
  res, rdir = run_train(tmp_path, "--max_iters=2", "--eval_interval=2")
  assert res.exit_code == 0, res.output
  assert json.loads((rdir / "config.json").read_text())["versions"]["kernel_opts"] == kernel_opts.describe()
  res, _ = run_train(tmp_path, "--max_iters=2", "--eval_interval=2", "--init_from=resume")  # the same table: no note
  assert res.exit_code == 0 and "kernel table" not in res.output, res.output
  monkeypatch.setenv("TINYSTORY_KERNEL_OPTS", "0")
  res, _ = run_train(tmp_path, "--max_iters=4", "--eval_interval=2", "--init_from=resume")
  assert res.exit_code == 0, res.output
  assert re.search(r"^note: the checkpoint was trained with the CPU kernel table kernel_opts\.json \(sha256 [0-9a-f]{12}\), "
                   r"\d+ searched kernels, for tinygrad's Clang CPU renderer; now none \(TINYSTORY_KERNEL_OPTS=0\): "
                   r"tinygrad's heuristics for every kernel: from here the floats differ from an uninterrupted run's by "
                   r"rounding$", res.output, re.M), res.output

SEARCH_INPUT = """
import json
from tinystory.config import SEED_MODEL
from tools.search_kernel_opts import step_kernels
from tinystory import kernel_opts
cfg = {**SEED_MODEL, "dim": 16, "n_layers": 1, "n_heads": 2, "n_kv_heads": 2, "vocab_size": 40, "max_seq_len": 16}
step = step_kernels(cfg, 2)
print(json.dumps({"keys": [k == kernel_opts.kernel_key(ast) for k, (ast, *_) in step.items()],
                  "names": [name for *_, name, ms in step.values()], "ms": [ms for *_, ms in step.values()]}))
"""

@pytest.mark.slow
def test_the_search_gets_every_timed_kernel_with_its_ast():
  """What the search (tools/search_kernel_opts.py) starts from (a tiny config here): each kernel timed in a replayed
  forward + backward, by its AST's key, with the AST and opts tinygrad's heuristics compiled it from, so that BEAM can
  search it; kernels of one name but different ASTs apart."""
  out = run(SEARCH_INPUT)
  assert len(out["ms"]) > 20 and all(out["keys"]) and all(v > 0 for v in out["ms"])
  assert len(set(out["names"])) < len(out["names"])  # some names are shared by kernels of different ASTs

POOL = """
import json, numpy as np
import tinygrad.engine.worker as worker
from tinystory.config import ModelArgs, TrainConfig
from tinystory.model import Transformer
from tinystory.train import TrainSteps
model = Transformer(ModelArgs(dim=16, n_layers=1, n_heads=2, n_kv_heads=2, vocab_size=40, max_seq_len=8), seed=0)
with TrainSteps(model, TrainConfig(batch_size=2, max_seq_len=8, compile=False)) as steps:
  steps.micro_step(*np.zeros((2, 2, 8), np.int64))  # its kernels compiled in tinygrad's worker pool, started here
print(json.dumps(worker.worker_pool._maxtasksperchild))
"""

@pytest.mark.parametrize("env, tasks", [({}, 1024), ({"BEAM_MAX_TASKS_PER_CHILD": "5"}, 5)])
def test_the_compile_workers_of_training_are_kept_for_many_kernels(monkeypatch, env, tasks):
  """tinygrad's compile worker pool, started while a TrainSteps is used, replaces each worker after 1,024 kernels
  (device.compile_workers_kept; tinygrad's own is 16), or after the environment's BEAM_MAX_TASKS_PER_CHILD."""
  monkeypatch.delenv("BEAM_MAX_TASKS_PER_CHILD", raising=False)
  assert run(POOL, PARALLEL="2", **env) == tasks
