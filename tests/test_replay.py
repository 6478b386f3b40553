"""replay.py: captured kernels called from Python, a split kernel's parts on helper threads, give the JIT's numbers."""
import threading
import numpy as np
import pytest
from tinygrad import Tensor, TinyJit
from tinygrad.helpers import NUM_CPU_THREADS
import tinystory.device as device
import tinystory.replay as replay
from tinystory.config import ModelArgs, TrainConfig
from tinystory.model import Transformer
from tinystory.device import host_view, upload
from tinystory.replay import ReplayJit
from tinystory.train import TrainSteps

needs_cores = pytest.mark.skipif(NUM_CPU_THREADS.value < 2, reason="one core: tinygrad splits no kernel over cores")

def relu_rows(x, w): return ((x @ w).relu() * 2).sum(axis=1).realize()

@needs_cores
def test_split_kernels_run_on_helper_threads_and_equal_the_jit(monkeypatch):
  monkeypatch.setattr(replay, "PARALLEL_MIN_S", 0.0)  # every split kernel in parallel, however fast
  rng = np.random.default_rng(0)
  x, w = Tensor.zeros(256, 64).contiguous().realize(), Tensor.zeros(64, 96).contiguous().realize()
  replayed, jit = ReplayJit(relu_rows, (x, w)), TinyJit(relu_rows)
  for _ in range(5):  # calls 1-2 run TinyJit, 3 the replay on this thread, 4-5 the replay in parallel
    xs, ws = rng.standard_normal(x.shape).astype(np.float32), rng.standard_normal(w.shape).astype(np.float32)
    upload(x, host_view(x), xs)
    upload(w, host_view(w), ws)
    got = replayed().numpy()
    assert np.array_equal(got, jit(Tensor(xs), Tensor(ws)).numpy())
    np.testing.assert_allclose(got, 2 * np.maximum(xs.astype(np.float64) @ ws, 0).sum(1), rtol=1e-4, atol=1e-4)
  assert replayed.replay is not None and any(replayed.replay.parallel)
  assert any(t.name.startswith("tinystory-kernel-") for t in threading.enumerate())

def test_parts_are_grouped_one_run_of_consecutive_parts_per_core():
  parts = [(i,) for i in range(16)]
  assert replay.group_parts(parts, 2) == [parts[:8], parts[8:]]
  assert [len(g) for g in replay.group_parts(parts[:5], 3)] == [1, 2, 2]
  assert replay.group_parts(parts[:3], 8) == [[p] for p in parts[:3]] and replay.group_parts(parts[:3], 0) == [parts[:3]]
  for n in range(1, 18): assert sum(replay.group_parts(parts, n), []) == parts  # every part once, in order

def test_more_parts_than_cores_run_as_one_group_per_core_and_equal_the_jit(monkeypatch):
  """NUM_CPU_THREADS=6 on 2 cores (as NUM_CPU_THREADS=16 emulates a 16-core machine's splitting): 2 threads, each
  running a run of consecutive parts, and the JIT's numbers."""
  from tinygrad import Context
  monkeypatch.setattr(replay, "PARALLEL_MIN_S", 0.0)
  monkeypatch.setattr(replay, "usable_cores", lambda: 2)
  handed, real_run = [], replay.Helpers.run
  monkeypatch.setattr(replay.Helpers, "run", lambda self, fxn, jobs: (handed.append(len(jobs)), real_run(self, fxn, jobs)))
  rng = np.random.default_rng(1)
  with Context(NUM_CPU_THREADS=6):
    x, w = Tensor.zeros(256, 64).contiguous().realize(), Tensor.zeros(64, 96).contiguous().realize()
    replayed, jit = ReplayJit(relu_rows, (x, w)), TinyJit(relu_rows)
    for _ in range(5):
      xs, ws = rng.standard_normal(x.shape).astype(np.float32), rng.standard_normal(w.shape).astype(np.float32)
      upload(x, host_view(x), xs)
      upload(w, host_view(w), ws)
      assert np.array_equal(replayed().numpy(), jit(Tensor(xs), Tensor(ws)).numpy())
  assert max(len(parts) for _, _, parts in replayed.replay.kernels) > 2 and handed and set(handed) == {2}

def kernel_threads() -> int: return sum(t.name.startswith("tinystory-kernel-") for t in threading.enumerate())

def test_the_helper_pool_grows_and_is_reused_without_leaking_threads():
  before = kernel_threads()
  pool = replay.helpers(before + 1)
  assert kernel_threads() == before + 1
  assert replay.helpers(before + 3) is pool and kernel_threads() == before + 3  # grown: the old threads serve on
  assert replay.helpers(1) is pool and kernel_threads() == before + 3
  ran = []
  pool.run(lambda i: ran.append((i, threading.current_thread().name)), [(i,) for i in range(before + 4)])
  assert sorted(i for i, _ in ran) == list(range(before + 4))
  assert {name for _, name in ran} == {threading.current_thread().name} | {f"tinystory-kernel-{i}" for i in range(before + 3)}

@needs_cores
def test_tinystory_threads_0_keeps_every_part_on_the_calling_thread(monkeypatch):
  monkeypatch.setattr(replay, "PARALLEL_MIN_S", 0.0)
  monkeypatch.setenv("TINYSTORY_THREADS", "0")
  monkeypatch.setattr(replay.Helpers, "run", lambda *a: pytest.fail("a kernel part was handed to a helper thread"))
  x, w = Tensor.ones(256, 64).contiguous().realize(), Tensor.ones(64, 96).contiguous().realize()
  replayed = ReplayJit(relu_rows, (x, w))
  for _ in range(4): assert replayed().tolist() == [2 * 64 * 96] * 256
  assert replayed.replay.helpers is None and not any(replayed.replay.parallel)
  assert max(len(parts) for _, _, parts in replayed.replay.kernels) > 1  # split kernels, all run here

def train_steps(n: int, replayed: bool) -> tuple[list[float], dict[str, np.ndarray]]:
  """n training iterations of a tiny model with dropout: the losses and the final weights."""
  Tensor.manual_seed(7)
  model = Transformer(ModelArgs(dim=32, n_layers=2, n_heads=4, vocab_size=40, max_seq_len=16, dropout=0.1), seed=3)
  steps, rng, losses = TrainSteps(model, TrainConfig(batch_size=4, max_seq_len=16)), np.random.default_rng(0), []
  for _ in range(n):
    loss = steps.micro_step(*(rng.integers(0, 40, (4, 16)) for _ in range(2)))
    steps.update(1e-2)
    losses.append(loss.item())
  for jit in (steps._micro, steps._update): assert (jit.replay is not None) == replayed
  # the forward + backward has kernels split over the cores (the update's are all too small to split since the clip
  # factor is its own kernel)
  assert not replayed or any(steps._micro.replay.parallel)
  return losses, {k: v.numpy() for k, v in model.state_dict().items()}

@pytest.mark.slow
@needs_cores
def test_training_replayed_in_parallel_equals_tinyjit_bit_for_bit(monkeypatch):
  monkeypatch.setattr(replay, "PARALLEL_MIN_S", 0.0)
  losses, weights = train_steps(6, replayed=True)
  monkeypatch.setattr(replay, "kernel_replay", lambda jit, inputs: None)  # TinyJit runs every call
  jit_losses, jit_weights = train_steps(6, replayed=False)
  assert losses == jit_losses and len(set(losses)) == 6
  for k in weights: assert np.array_equal(weights[k], jit_weights[k]), k

def test_batch_of_the_wrong_shape_is_refused():
  model = Transformer(ModelArgs(dim=32, n_layers=1, n_heads=4, vocab_size=40, max_seq_len=16), seed=3)
  steps = TrainSteps(model, TrainConfig(batch_size=4, max_seq_len=16))
  with pytest.raises(ValueError, match=r"expected int64 values of shape \(4, 16\), got int64 \(4, 15\)"):
    steps.micro_step(np.zeros((4, 15), np.int64), np.zeros((4, 15), np.int64))
  with pytest.raises(ValueError, match=r"expected int64 values of shape \(4, 16\), got float32 \(4, 16\)"):
    steps.micro_step(np.zeros((4, 16), np.float32), np.zeros((4, 16), np.int64))

def test_variables_must_all_be_named():
  from tinygrad import UOp
  x, n = Tensor.zeros(8).contiguous().realize(), UOp.variable("n", 0, 7)
  f = ReplayJit(lambda x, n: (x + Tensor.arange(8).float() * n).realize(), (x,), (n,))
  for v in (3, 5, 2, 7):  # the JIT, its capture, then the replay with n as the kernel's argument
    assert f(n=v).tolist() == [v * i for i in range(8)]
  assert f.replay is not None
  with pytest.raises(TypeError, match=r"expected values for \['n'\], got \['m'\]"): f(m=3)

def test_without_the_jit_every_call_runs_the_function():
  from tinygrad import Context
  x = Tensor.zeros(4).contiguous().realize()
  f = ReplayJit(lambda x: (x + 1).realize(), (x,))
  with Context(JIT=0):
    for i in range(4):
      upload(x, host_view(x), np.full(4, i, np.float32))
      assert f().tolist() == [i + 1] * 4
  assert f.replay is None

def test_another_tinygrad_runs_the_jit_and_says_so(monkeypatch, logged):
  monkeypatch.setattr("importlib.metadata.version", lambda name: "0.15.0")
  device.tinygrad_is_pinned.cache_clear()
  try:
    x = Tensor.zeros(4).contiguous().realize()
    f = ReplayJit(lambda x: (x + 1).realize(), (x,))
    for i in range(4):
      upload(x, host_view(x), np.full(4, i, np.float32))
      assert f().tolist() == [i + 1] * 4
    assert f.replay is None
    assert logged == ["note: tinygrad 0.15.0 is not 0.14.0, whose internals replay.py and kernel_opts.py read: kernels run "
                      "through TinyJit, on one core, as tinygrad's heuristics optimise them"]
  finally: device.tinygrad_is_pinned.cache_clear()
