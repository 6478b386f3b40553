"""`python cli.py bench`: training and sampling speed of the seed config, side by side with PyTorch in the same run.

Each measurement runs in its own process (`python -m tinystory.bench --worker train|sample ...`), so its peak RSS and
its compile caches are its own. This machine class is shared and noisy: compare ratios from one bench run, not
absolute numbers from different runs; the JSON records the load average before and after.
"""
import argparse, json, os, platform, resource, statistics, subprocess, sys, time
from pathlib import Path
from tinystory import SEED_MODEL, UserError, write_atomic
from tinystory.log import log

ROOT = Path(__file__).resolve().parent.parent

def peak_rss_mb() -> float:
  kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
  return kb / (1 << 20) if sys.platform == "darwin" else kb / 1024  # bytes on macOS, KiB on Linux

# *** workers: one measurement each, printing one JSON object ***

def measure_train(cfg: dict, batch_size: int, steps: int, kernels: int = 0) -> dict:
  """The training code path itself (train.TrainSteps: forward, backward, clip, AdamW) on random tokens. kernels > 0:
  then one more forward + backward, timed kernel by kernel: the `kernels` slowest kernel names, times summed."""
  import numpy as np
  from tinystory.model import ModelArgs, Transformer
  from tinystory.train import TrainConfig, TrainSteps
  t0 = time.perf_counter()
  model = Transformer(ModelArgs(**cfg), seed=1337)
  steps_ = TrainSteps(model, TrainConfig(batch_size=batch_size, max_seq_len=cfg["max_seq_len"]))
  rng = np.random.default_rng(0)
  times, first_step_s = [], None
  batch = lambda: [rng.integers(0, cfg["vocab_size"], (batch_size, cfg["max_seq_len"])) for _ in range(2)]
  for _ in range(steps + 3):  # the 1st call compiles, the 2nd captures, the 3rd replays on one core, timing each kernel
    x, y = batch()
    t = time.perf_counter()
    loss = steps_.micro_step(x, y)
    steps_.update(1e-4)
    loss.item()
    times.append(time.perf_counter() - t)
    if first_step_s is None: first_step_s = time.perf_counter() - t0  # model init + compiling every kernel
  step = statistics.median(times[3:])
  out = {"first_step_s": first_step_s, "train_step_s": step, "train_tokens_per_s": batch_size * cfg["max_seq_len"] / step,
         "peak_rss_mb": peak_rss_mb()}
  if kernels:
    profile, by_name = [], {}
    steps_.micro_step(*batch(), profile=profile)
    for name, parts, s in profile:
      k = by_name.setdefault(name, {"kernel": name, "count": 0, "parts": parts, "ms": 0.0})
      k["count"], k["ms"] = k["count"] + 1, k["ms"] + s * 1000
    out["kernels"] = sorted(by_name.values(), key=lambda k: -k["ms"])[:kernels]
    out["kernels_total_ms"], out["kernels_count"] = sum(s for *_, s in profile) * 1000, len(profile)
  return out

def measure_sample(cfg: dict, new_tokens: int) -> dict:
  """sample.py's KV-cached generation, greedy (the work per token does not depend on the draws). Two rates: filling
  one max_seq_len window from BOS (a cached step per token), and new_tokens with llama2.c's exact sliding window
  (past max_seq_len tokens, a recompute of the window per token)."""
  import numpy as np
  from tinystory.model import ModelArgs, Transformer
  from tinystory.sample import CachedDecoder, generate
  model = Transformer(ModelArgs(**{**cfg, "dropout": 0.0}), seed=1337)
  decoder = CachedDecoder(model)
  def rate(n: int) -> float:
    t = time.perf_counter()
    for _ in generate(decoder, [1], n, np.argmax): pass
    return n / (time.perf_counter() - t)
  t = time.perf_counter()
  rate(cfg["max_seq_len"] + 2)  # compile the step and the window recompute
  first = time.perf_counter() - t
  window = statistics.median(rate(cfg["max_seq_len"] - 1) for _ in range(3))
  return {"sample_first_s": first, "sample_tokens_per_s": window, "sample_slide_tokens_per_s": rate(new_tokens),
          "peak_rss_mb": peak_rss_mb()}

def worker(argv: list[str]) -> None:
  p = argparse.ArgumentParser()
  p.add_argument("--worker", choices=["train", "sample"], required=True)
  p.add_argument("--cfg", type=json.loads, default={})
  p.add_argument("--batch-size", type=int, default=64)
  p.add_argument("--steps", type=int, default=5)
  p.add_argument("--new-tokens", type=int, default=500)
  p.add_argument("--kernels", type=int, default=0)
  a = p.parse_args(argv)
  cfg = {**SEED_MODEL, **a.cfg}
  out = measure_train(cfg, a.batch_size, a.steps, a.kernels) if a.worker == "train" else measure_sample(cfg, a.new_tokens)
  print(json.dumps(out))

# *** the bench command: run the workers, print ratios ***

def run_worker(cmd: list[str], env: dict) -> dict:
  p = subprocess.run([sys.executable, "-m", *cmd], cwd=ROOT, env=env, capture_output=True, text=True)
  if p.returncode != 0:
    tail = (p.stderr.strip().splitlines() or ["(no output)"])[-1]
    raise UserError(f"benchmark worker `{' '.join(cmd)}` failed: {tail}")
  return json.loads(p.stdout.strip().splitlines()[-1])

def torch_available() -> bool:
  from importlib.util import find_spec
  return find_spec("torch") is not None

def bench(overrides: dict | None = None, batch_size: int = 64, steps: int = 5, new_tokens: int = 500,
          against: tuple[str, ...] = (), beam: int = 0, json_path: str | None = None, kernels: int = 0) -> dict:
  """Measure tinygrad training and sampling (and PyTorch's, with against=('torch',)); log a table, return the results."""
  from tinystory.model import ModelArgs
  cfg = {**SEED_MODEL, **(overrides or {})}
  ModelArgs(**cfg)  # validate before spending minutes
  if steps < 1 or new_tokens < 1 or batch_size < 1: raise UserError("--steps, --new-tokens and --batch-size must be positive")
  if kernels < 0: raise UserError(f"--kernels must be >= 0 (0: no kernel table), got {kernels}")
  if "torch" in against and not torch_available():
    raise UserError("--against torch needs PyTorch: pip install '.[bench]' (a CPU build: pip install torch==2.13.0)")
  env = {**os.environ, **({"BEAM": str(beam)} if beam else {})}
  args = ["--cfg", json.dumps(cfg), "--batch-size", str(batch_size), "--steps", str(steps), "--new-tokens", str(new_tokens)]
  res = {"config": cfg, "batch_size": batch_size, "beam": beam, "machine": f"{platform.machine()}, {os.cpu_count()} cpus",
         "loadavg_before": os.getloadavg()[0]}
  log(f"bench: {ModelArgs(**cfg)}, batch {batch_size}, {steps} timed steps after warm-up (tinygrad 3 steps, torch 1)")
  log("tinygrad: training ...")
  res.update(run_worker(["tinystory.bench", "--worker", "train", *args, "--kernels", str(kernels)], env))
  log("tinygrad: sampling ...")
  s = run_worker(["tinystory.bench", "--worker", "sample", *args], env)
  res.update(sample_tokens_per_s=s["sample_tokens_per_s"], sample_slide_tokens_per_s=s["sample_slide_tokens_per_s"],
             sample_first_s=s["sample_first_s"], sample_peak_rss_mb=s["peak_rss_mb"])
  if "torch" in against:
    targs = ["--cfg", json.dumps(cfg), "--batch-size", str(batch_size), "--steps", str(steps + 1),
             "--new-tokens", str(cfg["max_seq_len"] - 1), "--window", str(cfg["max_seq_len"]), "--json"]
    res["against"] = {}
    for name, compile in (("torch_eager", 0), ("torch_compile", 1)):
      log(f"{name}: training ...")
      res["against"][name] = run_worker(["bench.torch_llama", "--mode", "train", "--compile", str(compile), *targs], env)
    log("torch_eager: sampling (llama2.c's sample.py: no KV cache) ...")
    ts = run_worker(["bench.torch_llama", "--mode", "sample", "--compile", "0", *targs], env)
    res["against"]["torch_eager"].update(sample_tokens_per_s=ts["sample_tokens_per_s"], sample_peak_rss_mb=ts["peak_rss_mb"])
    for name, r in res["against"].items():
      r["train_speed_ratio"] = res["train_tokens_per_s"] / r["train_tokens_per_s"]
      if "sample_tokens_per_s" in r: r["sample_speed_ratio"] = res["sample_tokens_per_s"] / r["sample_tokens_per_s"]
  res["loadavg_after"] = os.getloadavg()[0]
  for line in report(res) + kernel_table(res): log(line)
  if json_path: write_atomic(json_path, json.dumps(res, indent=1))
  return res

def report(res: dict) -> list[str]:
  cols = [("step s", "train_step_s", ".3f"), ("tok/s", "train_tokens_per_s", ",.0f"), ("first s", "first_step_s", ".1f"),
          ("RSS MB", "peak_rss_mb", ",.0f"), ("sample tok/s", "sample_tokens_per_s", ",.0f"),
          ("x train", "train_speed_ratio", ".2f"), ("x sample", "sample_speed_ratio", ".2f")]
  cell = lambda r, k, f, w: format(r[k], f).rjust(w) if r.get(k) is not None else "-".rjust(w)
  lines = [f"{'':14}" + "".join(f"{h:>14}" for h, _, _ in cols)]
  for name, r in [("tinygrad", res)] + list(res.get("against", {}).items()):
    lines.append(f"{name:14}" + "".join(cell(r, k, f, 14) for _, k, f in cols))
  lines.append(f"sample tok/s: filling one {res['config']['max_seq_len']}-token window from BOS (tinygrad: KV cache; "
               f"torch: llama2.c's sample.py, no cache); tinygrad with llama2.c's exact sliding window past it: "
               f"{res['sample_slide_tokens_per_s']:,.0f} tok/s")
  lines.append(f"x = tinygrad's speed / that row's; load average {res['loadavg_before']:.1f} before, {res['loadavg_after']:.1f} after")
  return lines

def kernel_table(res: dict) -> list[str]:
  if not res.get("kernels"): return []
  lines = [f"the slowest kernels of one replayed forward + backward ({res['kernels_count']} kernels, "
           f"{res['kernels_total_ms']:,.0f} ms in all; parts: the cores a kernel is split over):",
           f"{'ms':>8} {'count':>6} {'parts':>6}  kernel"]
  return lines + [f"{k['ms']:8.1f} {k['count']:6d} {k['parts']:6d}  {k['kernel']}" for k in res["kernels"]]

if __name__ == "__main__": worker(sys.argv[1:])
