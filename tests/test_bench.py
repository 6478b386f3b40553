"""The bench command: real workers on a tiny config, the JSON it writes, its table, and its errors."""
import json, time
from pathlib import Path
import pytest
from tinystory.config import SEED_MODEL
from tinystory import UserError
from tinystory import bench

TINY = dict(dim=16, n_layers=1, n_heads=2, n_kv_heads=2, vocab_size=40, max_seq_len=16)

@pytest.mark.slow
def test_tiny_bench_measures_training_and_sampling(tmp_path, logged):
  t0 = time.perf_counter()
  res = bench.bench(TINY, batch_size=2, steps=2, new_tokens=24, json_path=str(tmp_path / "b.json"), kernels=3)
  wall = time.perf_counter() - t0
  saved = json.loads((tmp_path / "b.json").read_text())
  assert saved == json.loads(json.dumps(res))  # the file holds the whole result
  # the measurements against this test's own clock: every timed part took some of the wall time it ran in
  assert saved["train_step_s"] > 0 and saved["first_step_s"] > 0 and saved["first_step_s"] + 2 * saved["train_step_s"] < wall
  assert saved["train_tokens_per_s"] == pytest.approx(2 * 16 / saved["train_step_s"])
  assert 16 / wall < saved["sample_tokens_per_s"] and 24 / wall < saved["sample_slide_tokens_per_s"]
  assert 50 < saved["peak_rss_mb"] < 16_000  # tinygrad and numpy are loaded; a tiny model needs no more than that
  assert saved["config"] == {**SEED_MODEL, **TINY} and saved["batch_size"] == 2
  table = logged[logged.index(next(l for l in logged if l.strip().startswith("step s"))):]
  assert table[1].startswith("tinygrad") and len(table[1].split()) == 8  # name + 7 columns, '-' where not measured
  # the kernel table: the 3 slowest kernel names of a replayed step, slowest first, from a profile of all of them
  ks = saved["kernels"]
  assert len(ks) == 3 and [k["ms"] for k in ks] == sorted((k["ms"] for k in ks), reverse=True)
  assert sum(k["count"] for k in ks) < saved["kernels_count"] and sum(k["ms"] for k in ks) < saved["kernels_total_ms"]
  assert all(k["parts"] >= 1 and k["kernel"][0] in "ERr" for k in ks)
  rows = logged[-3:]
  assert [r.split()[-1] for r in rows] == [k["kernel"] for k in ks] and logged[-5].startswith("the slowest kernels")

def test_against_torch_needs_torch(monkeypatch):
  monkeypatch.setattr(bench, "torch_available", lambda: False)
  with pytest.raises(UserError, match=r"--against torch needs PyTorch: pip install '\.\[bench\]'"): bench.bench(TINY, against=("torch",))

def test_negative_kernel_count_is_refused():
  with pytest.raises(UserError, match=r"--kernels must be >= 0 \(0: no kernel table\), got -1"): bench.bench(TINY, kernels=-1)

def test_bad_config_fails_before_measuring():
  with pytest.raises(UserError, match="dim=16 is not divisible by n_heads=3"): bench.bench({**TINY, "n_heads": 3, "n_kv_heads": 3})

@pytest.mark.slow
def test_tiny_bench_names_its_device(tmp_path, logged):
  res = bench.bench(TINY, batch_size=2, steps=1, new_tokens=4)
  assert res["device"] == "CPU" and res["device_name"].endswith(f"{__import__('os').cpu_count()} cores")
  assert f"tinygrad ran on CPU: {res['device_name']}" in logged

def fake_workers(monkeypatch, torch_device="cpu"):
  """run_worker answering from canned numbers, recording the order of the calls: tinygrad's train rounds take 1.0,
  1.2, 1.1 s a step (the first one's first step 30 s), torch eager's 1.5, 1.4, 1.6 s."""
  calls, ours, eager = [], iter([1.0, 1.2, 1.1]), iter([1.5, 1.4, 1.6])
  def run_worker(cmd, env):
    mode = cmd[cmd.index("--worker") + 1] if "--worker" in cmd else cmd[cmd.index("--mode") + 1] + cmd[cmd.index("--compile") + 1]
    calls.append(mode)
    dev = {"device": "CPU" if "--worker" in cmd else torch_device, "device_name": "a CPU, 2 cores", "peak_rss_mb": 1.0}
    if mode == "train":  # the first round compiles, and lists the kernels when asked (--kernels N)
      kernels = int(cmd[cmd.index("--kernels") + 1]) if "--kernels" in cmd else 0
      listed = {"kernels": [{"kernel": "k", "count": 1, "parts": 2, "ms": 1.0}] * kernels, "kernels_total_ms": 9.0,
                "kernels_count": 9} if kernels else {}
      return {**dev, "train_step_s": (s := next(ours)), "train_tokens_per_s": 100 / s, "first_step_s": 30.0 if len(calls) == 1 else 2.0,
              **listed}
    if mode == "sample": return {**dev, "sample_tokens_per_s": 50.0, "sample_slide_tokens_per_s": 5.0, "sample_first_s": 1.0}
    if mode == "train0": return {**dev, "train_step_s": (s := next(eager)), "train_tokens_per_s": 100 / s, "first_step_s": 0.1}
    if mode == "train1": return {**dev, "train_step_s": 0.5, "train_tokens_per_s": 200.0, "first_step_s": 40.0}
    return {**dev, "sample_tokens_per_s": 25.0}
  monkeypatch.setattr(bench, "run_worker", run_worker)
  monkeypatch.setattr(bench, "torch_available", lambda: True)
  return calls

def test_against_torch_interleaves_rounds_and_reports_their_spread(monkeypatch, logged):
  calls = fake_workers(monkeypatch)
  res = bench.bench(TINY, against=("torch",), repeat=3, kernels=2)
  assert calls == ["train", "train0", "train", "train0", "train", "train0", "sample", "train1", "sample0"]
  assert len(res["kernels"]) == 2 and res["kernels_count"] == 9  # the first round's list, though round 3 is the median
  eager = res["against"]["torch_eager"]
  assert res["train_step_s"] == 1.1 and res["train_step_s_rounds"] == [1.0, 1.2, 1.1]  # the median round
  assert res["first_step_s"] == 2.0 and res["first_step_s_rounds"] == [30.0, 2.0, 2.0]  # the cold one kept too
  assert eager["train_step_s"] == 1.5 and eager["train_speed_ratios"] == pytest.approx([1.5, 1.4 / 1.2, 1.6 / 1.1])
  assert eager["train_speed_ratio"] == pytest.approx(1.5 / 1.1) and eager["sample_speed_ratio"] == 2.0
  assert res["against"]["torch_compile"]["train_speed_ratio"] == pytest.approx(0.5 / 1.1)
  assert "x train against torch_eager in 3 interleaved rounds: 1.50, 1.17, 1.45 (spread 1.17-1.50); the table shows the " \
         "median round of each" in logged

def test_no_ratio_between_two_devices(monkeypatch, logged):
  fake_workers(monkeypatch, torch_device="cuda")  # as if PyTorch had run elsewhere: its rows are shown, not divided
  res = bench.bench(TINY, against=("torch",), repeat=1)
  assert all("train_speed_ratio" not in r and "sample_speed_ratio" not in r for r in res["against"].values())
  assert "torch_eager ran on cuda: a CPU, 2 cores" in logged

def test_bad_device_and_repeat_are_refused():
  with pytest.raises(UserError, match=r"--device=cuda: tinygrad cannot open CUDA here"): bench.bench(TINY, device="cuda")
  with pytest.raises(UserError, match=r"--repeat must be positive"): bench.bench(TINY, repeat=0)

RECOMPUTING_KERNEL = """
import json
from tinystory.bench import render_only, executed_estimates
with render_only():
  from tinygrad import Tensor
  from tinygrad.helpers import PARALLEL
  import tinygrad.engine.realize as realize
  PARALLEL.value = 0
  calls, track = [], realize.track_stats
  realize.track_stats = lambda ctx, call, st, ets: (calls.append(call), track(ctx, call, st, ets))[1]
  a, b = Tensor.ones(65536).contiguous().realize(), Tensor.ones(4096).contiguous().realize()
  calls.clear()
  (a * b.square().sum()).realize()
[call] = calls
executed, threads = executed_estimates(call.src[0])
print(json.dumps([realize.estimate_uop(call).ops, executed.ops, threads]))
"""

def test_a_reduction_each_thread_block_recomputes_is_counted_in_every_block():
  """a * b.square().sum() is one kernel for a GPU, and every thread block sums b again, before its blockIdx in the
  code: tinygrad's own estimate counts that sum once (as the CPU's code would run it), bench's once per block."""
  import os, subprocess, sys
  out = subprocess.run([sys.executable, "-c", RECOMPUTING_KERNEL], env={**os.environ, "DEV": "NULL:CUDA:sm_90"},
                       cwd=Path(__file__).resolve().parent.parent, capture_output=True, text=True, check=True).stdout
  tinygrads, executed, threads = json.loads(out.splitlines()[-1])
  assert tinygrads < 16 * 65536  # a few ops per output (indexing included), b's sum (2 x 4,096) once
  assert executed >= 65536 // 16 * 2 * 4096  # b's sum once per block of at most 16 outputs: 4,096 blocks or more
  assert 65536 // 16 <= threads <= 65536 * 16  # at most 16 outputs a thread, at most 16 threads an output (a grouped sum)

@pytest.mark.slow
def test_schedule_of_the_seed_step_for_a_gpu_renderer_needs_no_gpu_and_recomputes_little(logged):
  """The seed config's training iteration rendered for CUDA on the NULL device (no CUDA library here): its estimated
  FLOPs as executed stay within 1.5x of the model's arithmetic (issue 13's bound: a kernel recomputing a chain per
  output element, or the clip's norm in every thread block of every update (20x), would blow it), and the table adds up."""
  res = bench.schedule(batch_size=64, renderer="cuda", kernels=5)
  assert res["renderer"] == "CUDARenderer" and res["device"] == "NULL"
  assert res["model_flops"] == 64 * 128 * (6 * 834_644 + 12 * 4 * 16 * 8 * 128)  # 834,644 parameters
  assert 1.0 < res["flops_ratio"] <= 1.5, res["flops_ratio"]
  ks = res["kernels"]
  # no kernel leaves a GPU with a few threads and long loops: weight gradients summed over all 8,192 positions in one
  # go (256 threads, 1,075 kFLOP each) or the clip's norm in one kernel (16 threads, 535 kFLOP each) did
  assert max(k["flops_per_thread"] for k in ks) < 100e3
  assert sum(k["flops"] for k in ks) == res["flops"] and sum(k["count"] for k in ks) == res["kernels_count"] > 400
  assert [k["flops"] for k in ks] == sorted((k["flops"] for k in ks), reverse=True) and len(logged[-5:]) == 5
  with pytest.raises(UserError, match="--schedule must be one of cuda, amd, cpu, got 'tpu'"): bench.schedule(renderer="tpu")
