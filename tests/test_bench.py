"""The bench command: real workers on a tiny config, the JSON it writes, its table, and its errors."""
import json, time
import pytest
from tinystory import SEED_MODEL, UserError
from tinystory import bench

TINY = dict(dim=16, n_layers=1, n_heads=2, n_kv_heads=2, vocab_size=40, max_seq_len=16)

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
