"""`python cli.py bench`: training and sampling speed of the seed config, side by side with PyTorch in the same run.

Each measurement runs in its own process (`python -m tinystory.bench --worker train|sample ...`), so its peak RSS and
its compile caches are its own. This machine class is shared and noisy: compare ratios from one bench run, not
absolute numbers from different runs; the JSON records the load average before and after.
"""
import argparse, json, math, os, platform, resource, statistics, subprocess, sys, time
from concurrent.futures import ThreadPoolExecutor
from importlib.util import find_spec
from pathlib import Path
import numpy as np
from tinygrad import Device, dtypes
from tinygrad.device import Compiler
from tinygrad.helpers import ansistrip
from tinygrad.renderer import Estimates
from tinygrad.uop.ops import Ops, sym_infer
import tinygrad.engine.realize as realize
import tinystory
from tinystory import UserError, kernel_opts, write_atomic
from tinystory.config import SEED_MODEL, ModelArgs, TrainConfig
from tinystory.device import choose_for, device_names, patched, using_device
from tinystory.log import log
from tinystory.replay import usable_cores
from tinystory.model import Transformer
from tinystory.sample import CachedDecoder, generate
from tinystory.train import TrainSteps, flops_per_token

def peak_rss_mb() -> float:
  kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
  return kb / (1 << 20) if sys.platform == "darwin" else kb / 1024  # bytes on macOS, KiB on Linux

# *** workers: one measurement each, printing one JSON object ***

def device_name(dev: str) -> str:
  """What the device is, for the table: the CPU's model and cores, or the GPU's name where the system says it."""
  if dev.startswith("CPU"):
    model = platform.processor() or platform.machine()
    try: model = next(l.split(":", 1)[1].strip() for l in Path("/proc/cpuinfo").read_text().splitlines() if l.startswith("model name"))
    except (OSError, StopIteration): pass
    return f"{model}, {os.cpu_count()} cores"
  if dev.split(":")[0] in ("CUDA", "NV"):
    try: return subprocess.run(["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"], capture_output=True, text=True,
                               timeout=10).stdout.splitlines()[0].strip()
    except (OSError, IndexError, subprocess.SubprocessError): pass
  return dev

# the PyTorch device that runs on the same hardware as a tinygrad backend (ROCm's torch calls AMD GPUs 'cuda' too)
TORCH_DEVICE = {"CPU": "cpu", "CUDA": "cuda", "NV": "cuda", "AMD": "cuda", "HIP": "cuda", "METAL": "mps"}

def train_driver(cfg: dict, batch_size: int, grad_chunk: int = 0):
  """The measured code path, train.TrainSteps, on a fresh model of cfg (with the device's gradient chunk, as train
  makes it), and a maker of random (tokens, targets) batches for it."""
  model = Transformer(ModelArgs(**cfg), seed=1337, grad_chunk=grad_chunk)
  steps = TrainSteps(model, TrainConfig(batch_size=batch_size, max_seq_len=cfg["max_seq_len"]))
  rng = np.random.default_rng(0)
  return steps, lambda: [rng.integers(0, cfg["vocab_size"], (batch_size, cfg["max_seq_len"])) for _ in range(2)]

def kernel_times(steps, batch) -> dict[str, dict]:
  """One more forward + backward, timed kernel by kernel: kernel name -> its count, parts and milliseconds (summed)."""
  profile, by_name = [], {}
  steps.micro_step(*batch(), profile=profile)
  for name, parts, s in profile:
    k = by_name.setdefault(name, {"kernel": name, "count": 0, "parts": parts, "ms": 0.0})
    k["count"], k["ms"] = k["count"] + 1, k["ms"] + s * 1000
  return by_name

def measure_train(cfg: dict, batch_size: int, steps: int, kernels: int = 0, grad_chunk: int = 0, roofline: bool = False) -> dict:
  """The training code path itself (train.TrainSteps: forward, backward, clip, AdamW) on random tokens. kernels > 0:
  then one more forward + backward, timed kernel by kernel: the `kernels` slowest kernel names, times summed.
  roofline: then one more step timed kernel by kernel, by family, beside this machine's peaks (step_roofline)."""
  t0 = time.perf_counter()
  steps_, batch = train_driver(cfg, batch_size, grad_chunk)
  times, first_step_s = [], None
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
    by_name = kernel_times(steps_, batch)
    out["kernels"] = sorted(by_name.values(), key=lambda k: -k["ms"])[:kernels]
    out["kernels_total_ms"], out["kernels_count"] = sum(k["ms"] for k in by_name.values()), sum(k["count"] for k in by_name.values())
  if roofline: out["roofline"] = step_roofline(steps_, batch, cfg, batch_size)
  return out

# *** the roofline: a step's kernels by family, against this machine's own peaks measured in the same process ***

FAMILIES = ("matmul", "reduction", "elementwise", "copy", "dropout RNG")

def kernel_family(program, estimates=None) -> str:
  """What a compiled kernel (a PROGRAM uop) does: 'dropout RNG' (it hashes: threefry's XORs of uint32s), 'matmul' (a
  reduction doing 2 FLOP or more per byte it moves), 'reduction' (the other sums and maxes: norms, softmax, loss,
  the clip's norm), 'elementwise' (arithmetic per element), 'copy' (data moved, no arithmetic: layouts, transposes).
  `estimates`: the program's executed_estimates, index arithmetic left out, where the caller has them already."""
  uops = next(s for s in program.src if s.op is Ops.LINEAR).src
  if any(u.op is Ops.XOR and dtypes.is_unsigned(u.dtype) for u in uops): return "dropout RNG"
  e = estimates or executed_estimates(program, ignore_indexing=True)[0]
  if ansistrip(program.arg.name).startswith("r_"): return "matmul" if e.ops >= 2 * e.mem else "reduction"  # tinygrad's r_: a reduce
  return "elementwise" if e.ops else "copy"

def matmul_shapes(cfg: dict, batch_size: int) -> list[tuple[int, int, int]]:
  """(M, K, N) of the seed step's matmuls: the q/k/v/o, w1/w3 and w2 projections and the logits over every position,
  and a weight's gradient (a reduction over the positions)."""
  a = ModelArgs(**cfg)
  rows, d, h, v = batch_size * a.max_seq_len, a.dim, a.hidden_size, a.vocab_size
  return [(rows, d, d), (rows, d, h), (rows, h, d), (rows, d, v), (d, rows, h)]

def machine_peaks(shapes: list[tuple[int, int, int]], runs: int = 20, copy_mb: int = 64) -> dict:
  """This machine's own rates, here and now, on every core the kernels run on: numpy's sgemm (its BLAS) at each
  (M, K, N), the best of `runs` calls, and the bandwidth of a copy_mb MB copy (bytes read + written; a slice per core,
  numpy lets go of the GIL while it copies), the best of `runs`."""
  rng, sgemm = np.random.default_rng(0), {}
  for M, K, N in shapes:
    a, b = rng.standard_normal((M, K), dtype=np.float32), rng.standard_normal((K, N), dtype=np.float32)
    sgemm[f"{M}x{K}x{N}"] = 2 * M * K * N / best_time(lambda: a @ b, runs) / 1e9
  src, cores = np.ones(copy_mb << 18, np.float32), usable_cores()
  dst = np.empty_like(src)
  with ThreadPoolExecutor(cores) as pool:
    slices = list(zip(np.array_split(dst, cores), np.array_split(src, cores)))
    copy_s = best_time(lambda: list(pool.map(lambda ds: np.copyto(*ds), slices)), runs)
  return {"sgemm_gflops": sgemm, "sgemm_peak_gflops": max(sgemm.values()), "runs": runs, "copy_mb": copy_mb,
          "cores": cores, "copy_gbps": 2 * src.nbytes / copy_s / 1e9}

def best_time(fxn, runs: int) -> float:
  fxn()
  times = []
  for _ in range(runs):
    t = time.perf_counter()
    fxn()
    times.append(time.perf_counter() - t)
  return min(times)

def step_roofline(steps, batch, cfg: dict, batch_size: int) -> dict:
  """One more training iteration (a forward + backward, then the update), timed kernel by kernel, summed by
  kernel_family: ms, GFLOP and GB (tinygrad's estimates from each rendered kernel, index arithmetic not counted)
  beside machine_peaks measured right after, and llama2.c's count of the model's arithmetic."""
  families, runs = {}, []
  steps.micro_step(*batch(), profile=(micro := []))
  steps.update(1e-4, profile=(update := []))
  for jit, profile in zip(steps.compiled(), (micro, update)):
    for (_, _, s), program in zip(profile, jit.replay.programs(), strict=True):
      e, _ = executed_estimates(program, ignore_indexing=True)
      f = families.setdefault(kernel_family(program, e), {"kernels": 0, "ms": 0.0, "flops": 0, "bytes": 0})
      f["kernels"], f["ms"], f["flops"], f["bytes"] = f["kernels"] + 1, f["ms"] + s * 1e3, f["flops"] + e.ops, f["bytes"] + e.mem
    runs.append(sum(s for _, _, s in profile))
  model_flops = flops_per_token(steps.model) * batch_size * cfg["max_seq_len"]
  return {"families": families, "micro_ms": runs[0] * 1e3, "update_ms": runs[1] * 1e3, "model_flops": model_flops,
          **machine_peaks(matmul_shapes(cfg, batch_size))}

def measure_sample(cfg: dict, new_tokens: int) -> dict:
  """sample.py's KV-cached generation, greedy (the work per token does not depend on the draws). Two rates: filling
  one max_seq_len window from BOS (a cached step per token), and new_tokens with llama2.c's exact sliding window
  (past max_seq_len tokens, a recompute of the window per token)."""
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

# tinygrad's NULL device schedules, optimises and renders every kernel for a real backend's renderer without running
# it: DEV=NULL:<renderer>:<arch>. Its kernels' estimated FLOPs and bytes show recomputation without the hardware.
RENDERERS = {"cuda": "NULL:CUDA:sm_90", "amd": "NULL:HIP:gfx1100", "cpu": "NULL:CLANG:x86_64,native"}

def render_only():
  """For a block (device.patched): the vendor compilers (NVRTC, comgr, clang) replaced by one that keeps the source
  (the NULL device never runs a kernel, so none needs compiling, and none of those libraries need be installed), and
  every kernel compiled in this process (PARALLEL=0: a pool's worker processes would import the real compilers again)."""
  # imported here: only the NULL device's renders need them (each loads its vendor's compiler bindings)
  import tinygrad.runtime.support.compiler_amd as amd, tinygrad.runtime.support.compiler_cpu as cpu
  import tinygrad.runtime.support.compiler_cuda as cuda
  class SourceOnly(Compiler):
    def __init__(self, *args, **kwargs): super().__init__(None)
  compilers = ((cuda, "NVRTCCompiler"), (cuda, "NVCCCompiler"), (amd, "HIPCompiler"), (amd, "HIPCCCompiler"), (cpu, "ClangCompiler"))
  return patched({"PARALLEL": 0}, tuple((m, name, SourceOnly) for m, name in compilers))

def executed_estimates(program, ignore_indexing: bool = False) -> tuple:
  """tinygrad's estimates of a rendered kernel (a PROGRAM) as its threads run it, and the number of threads (GPU
  threads, or CPU parts): every op counted once per thread that executes it. tinygrad's own count multiplies an op
  only by the thread indices that come before it in the code, so a reduction that each thread block recomputes,
  placed before blockIdx, counts once."""
  uops = next(s for s in program.src if s.op is Ops.LINEAR).src
  ids = [u for u in uops if u.op is Ops.SPECIAL or (u.op is Ops.PARAM and u.arg.name == "core_id")]
  threads = math.prod(int(u.src[0].vmax) if u.op is Ops.SPECIAL else int(u.vmax) + 1 for u in ids)
  return Estimates.from_uops(tuple(ids) + tuple(u for u in uops if u not in ids), ignore_indexing), threads

def measure_schedule(cfg: dict, batch_size: int, grad_chunk: int = 0) -> dict:
  """One training iteration (micro-step and update, eager) on the NULL device, every kernel's estimated FLOPs and
  bytes (tinygrad's own estimates, from the rendered kernel) summed by kernel name, against llama2.c's estimate of the
  model's arithmetic. Run with DEV=NULL:... (RENDERERS); a first iteration realises the initial weights first."""
  with render_only():  # before the NULL device opens: its renderer makes its compiler then
    model = Transformer(ModelArgs(**cfg), seed=1337, grad_chunk=grad_chunk)
    steps = TrainSteps(model, TrainConfig(batch_size=batch_size, max_seq_len=cfg["max_seq_len"], compile=False))
    x = np.zeros((batch_size, cfg["max_seq_len"]), np.int64)
    def iteration(): steps.micro_step(x, x), steps.update(1e-4)
    iteration()
    kernels, track = {}, realize.track_stats
    def record(ctx, call, st, ets):
      if ctx.update_stats:
        ast = call.src[0]
        e, threads = executed_estimates(ast) if ast.op is Ops.PROGRAM else (realize.estimate_uop(call), 1)
        name = ansistrip(ast.arg.name) if ast.op is Ops.PROGRAM else ast.op.name.lower()
        k = kernels.setdefault(name, {"kernel": name, "count": 0, "flops": 0, "bytes": 0, "threads": threads})
        k["count"], k["flops"], k["bytes"] = k["count"] + 1, k["flops"] + sym_infer(e.ops, ctx.var_vals), k["bytes"] + sym_infer(e.mem, ctx.var_vals)
      return track(ctx, call, st, ets)
    with patched(attrs=((realize, "track_stats", record),)): iteration()
    steps.close()
    renderer = type(Device[Device.DEFAULT].renderer).__name__
  model_flops = flops_per_token(model) * batch_size * cfg["max_seq_len"]
  return {"renderer": renderer, "device": Device.DEFAULT, "model_flops": model_flops,
          "kernels_count": sum(k["count"] for k in kernels.values()), "flops": sum(k["flops"] for k in kernels.values()),
          "bytes": sum(k["bytes"] for k in kernels.values()), "kernels": sorted(kernels.values(), key=lambda k: -k["flops"])}

def worker(argv: list[str]) -> None:
  p = argparse.ArgumentParser()
  p.add_argument("--worker", choices=["train", "sample", "schedule"], required=True)
  p.add_argument("--cfg", type=json.loads, default={})
  p.add_argument("--batch-size", type=int, default=64)
  p.add_argument("--steps", type=int, default=5)
  p.add_argument("--new-tokens", type=int, default=500)
  p.add_argument("--kernels", type=int, default=0)
  p.add_argument("--roofline", action="store_true")
  p.add_argument("--device", default="cpu")
  a = p.parse_args(argv)
  cfg = {**SEED_MODEL, **a.cfg}
  if a.worker == "schedule":  # on the NULL device its DEV names, with the choices of DEV's renderer's backend
    out, device = measure_schedule(cfg, a.batch_size, choose_for(os.environ["DEV"].split(":")[1]).grad_chunk), Device.DEFAULT
  else:
    with using_device(a.device) as dev:
      out = (measure_train(cfg, a.batch_size, a.steps, a.kernels, choose_for(dev).grad_chunk, a.roofline)
             if a.worker == "train" else measure_sample(cfg, a.new_tokens))
      device = Device.DEFAULT
  print(json.dumps({**out, "device": device, "device_name": device_name(device)}))

# *** the bench command: run the workers, print ratios ***

def worker_env(env: dict) -> dict:
  """`env` for a worker that imports this very tinystory, wherever it came from (an install, or the checkout that
  `python cli.py` runs from) and whatever the working directory holds: workers run with -P (no entry for the cwd),
  and the package's directory leads PYTHONPATH unless the worker finds it on its path anyway (site-packages, PYTHONPATH)."""
  home = Path(tinystory.__file__).resolve().parent.parent
  if home in {Path(p).resolve() for p in sys.path[1:] if p}: return env
  return {**env, "PYTHONPATH": os.pathsep.join(filter(None, [str(home), env.get("PYTHONPATH")]))}

def run_worker(cmd: list[str], env: dict) -> dict:
  p = subprocess.run([sys.executable, "-P", "-m", *cmd], env=worker_env(env), capture_output=True, text=True)
  if p.returncode != 0:
    tail = (p.stderr.strip().splitlines() or ["(no output)"])[-1]
    raise UserError(f"benchmark worker `{' '.join(cmd)}` failed: {tail}")
  return json.loads(p.stdout.strip().splitlines()[-1])

def torch_available() -> bool:
  return find_spec("torch") is not None

def bench(overrides: dict | None = None, batch_size: int = 64, steps: int = 5, new_tokens: int = 500,
          against: tuple[str, ...] = (), beam: int = 0, json_path: str | None = None, kernels: int = 0,
          device: str = "cpu", repeat: int = 3, roofline: bool = False) -> dict:
  """Measure tinygrad training and sampling on `device` (and PyTorch's on the same hardware, with against=('torch',):
  `repeat` rounds of tinygrad then PyTorch eager training, interleaved, so that both see the same machine load); log
  a table, return the results. Ratios are only computed between measurements on the same device. roofline: the first
  round also times one step's kernels by family against this machine's sgemm and copy rates (roofline_table)."""
  cfg = {**SEED_MODEL, **(overrides or {})}
  ModelArgs(**cfg)  # validate before spending minutes
  if steps < 1 or new_tokens < 1 or batch_size < 1 or repeat < 1:
    raise UserError("--steps, --new-tokens, --batch-size and --repeat must be positive")
  if kernels < 0: raise UserError(f"--kernels must be >= 0 (0: no kernel table), got {kernels}")
  dev = device_names(device)  # checked here; each worker runs on it
  torch_device = TORCH_DEVICE.get(dev.split(":")[0])
  if "torch" in against and not torch_available():
    raise UserError("--against torch needs PyTorch: pip install '.[bench]' (a CPU build: pip install torch==2.13.0)")
  if "torch" in against and torch_device is None: raise UserError(f"--against torch: PyTorch has no device for tinygrad's {dev}")
  if "torch" in against and cfg["unembedding"] not in ("pinv", "tied"):
    raise UserError(f"--against torch: the PyTorch twin (tinystory/torch_llama.py) has the pinv and tied unembeddings, not "
                    f"{cfg['unembedding']!r}")
  env = {**os.environ, **({"BEAM": str(beam)} if beam else {})}
  args = ["--cfg", json.dumps(cfg), "--batch-size", str(batch_size), "--steps", str(steps), "--new-tokens", str(new_tokens),
          "--device", device]
  rounds = repeat if "torch" in against else 1
  res = {"config": cfg, "batch_size": batch_size, "beam": beam, "machine": f"{platform.machine()}, {os.cpu_count()} cpus",
         "loadavg_before": os.getloadavg()[0], "rounds": rounds, "kernel_opts": kernel_opts.describe()}
  log(f"bench: {ModelArgs(**cfg)}, batch {batch_size}, {steps} timed steps after warm-up (tinygrad 3 steps, torch 1)")
  targs = ["--cfg", json.dumps(cfg), "--batch-size", str(batch_size), "--steps", str(steps + 1),
           "--new-tokens", str(cfg["max_seq_len"] - 1), "--window", str(cfg["max_seq_len"]), "--json", "--device", str(torch_device)]
  ours, eager = [], []
  for r in range(rounds):
    of = f" (round {r + 1} of {rounds})" if rounds > 1 else ""
    log(f"tinygrad: training on {dev}{of} ...")
    first = ["--kernels", str(kernels), *(["--roofline"] if roofline else [])] if r == 0 else []
    ours.append(run_worker(["tinystory.bench", "--worker", "train", *args, *first], env))
    if "torch" in against:
      log(f"torch_eager: training on {torch_device}{of} ...")
      eager.append(run_worker(["tinystory.torch_llama", "--mode", "train", "--compile", "0", *targs], env))
  res.update(median_run(ours), device_name=ours[0]["device_name"])
  res.update({k: v for k, v in ours[0].items() if k.startswith("kernels") or k == "roofline"})  # the first round's only
  log(f"tinygrad: sampling on {dev} ...")
  s = run_worker(["tinystory.bench", "--worker", "sample", *args], env)
  res.update(sample_tokens_per_s=s["sample_tokens_per_s"], sample_slide_tokens_per_s=s["sample_slide_tokens_per_s"],
             sample_first_s=s["sample_first_s"], sample_peak_rss_mb=s["peak_rss_mb"])
  if "torch" in against:
    res["against"] = {"torch_eager": median_run(eager)}
    log(f"torch_compile: training on {torch_device} ...")
    res["against"]["torch_compile"] = run_worker(["tinystory.torch_llama", "--mode", "train", "--compile", "1", *targs], env)
    log(f"torch_eager: sampling on {torch_device} (llama2.c's sample.py: no KV cache) ...")
    ts = run_worker(["tinystory.torch_llama", "--mode", "sample", "--compile", "0", *targs], env)
    res["against"]["torch_eager"].update(sample_tokens_per_s=ts["sample_tokens_per_s"], sample_peak_rss_mb=ts["peak_rss_mb"])
    for name, r in res["against"].items():
      if r["device"] != torch_device: continue  # never a ratio between two devices
      r["train_speed_ratio"] = res["train_tokens_per_s"] / r["train_tokens_per_s"]
      if "sample_tokens_per_s" in r: r["sample_speed_ratio"] = res["sample_tokens_per_s"] / r["sample_tokens_per_s"]
    # each round's ratio, from measurements taken back to back: the spread is the machine's noise
    res["against"]["torch_eager"]["train_speed_ratios"] = [o["train_tokens_per_s"] / e["train_tokens_per_s"] for o, e in zip(ours, eager)]
  res["loadavg_after"] = os.getloadavg()[0]
  for line in report(res) + kernel_table(res) + roofline_table(res): log(line)
  if json_path: write_atomic(json_path, json.dumps(res, indent=1))
  return res

def schedule(overrides: dict | None = None, batch_size: int = 64, renderer: str = "cuda", json_path: str | None = None,
             kernels: int = 25) -> dict:
  """`bench --schedule RENDERER`: the kernels of one training iteration as tinygrad would run them on RENDERER's
  backend, scheduled and rendered on the NULL device (no such hardware needed; nothing runs), with their estimated
  FLOPs (as executed: see executed_estimates) and bytes against the model's arithmetic; log a table, return the
  results. For CUDA the matmuls get TF32 tensor cores, as training on an NVIDIA GPU does (device.choose_for): the NULL
  device allows them whatever ALLOW_TF32 says."""
  cfg = {**SEED_MODEL, **(overrides or {})}
  ModelArgs(**cfg)
  if batch_size < 1: raise UserError("--batch-size must be positive")
  if renderer not in RENDERERS: raise UserError(f"--schedule must be one of {', '.join(RENDERERS)}, got {renderer!r}")
  log(f"schedule: {ModelArgs(**cfg)}, batch {batch_size}, one training iteration rendered for {renderer} "
      f"(DEV={RENDERERS[renderer]}: estimated, nothing runs) ...")
  res = run_worker(["tinystory.bench", "--worker", "schedule", "--cfg", json.dumps(cfg), "--batch-size", str(batch_size)],
                   {**os.environ, "DEV": RENDERERS[renderer]})
  res.update(config=cfg, batch_size=batch_size, flops_ratio=res["flops"] / res["model_flops"])
  log(f"{res['kernels_count']} kernels ({res['renderer']}): {res['flops'] / 1e9:,.1f} GFLOP estimated as executed, "
      f"{res['flops_ratio']:.2f}x the model's {res['model_flops'] / 1e9:,.1f} GFLOP (llama2.c's 6N + 12LHQT per token), "
      f"{res['bytes'] / 1e9:,.2f} GB read and written")
  for k in res["kernels"]: k["flops_per_thread"] = k["flops"] / k["count"] / k["threads"]
  longest = max(res["kernels"], key=lambda k: k["flops_per_thread"])
  if renderer != "cpu":  # where every thread is one core, not one of a GPU's many thousand lanes
    log(f"the longest work of one thread: {longest['flops_per_thread'] / 1e3:,.1f} kFLOP in {longest['kernel']} "
        f"({longest['threads']:,} threads): on a GPU, a kernel with few threads and long serial work runs slowly")
  log(f"the {min(kernels, len(res['kernels']))} kernels with the most estimated FLOPs (summed over their launches):")
  log(f"{'GFLOP':>8} {'share':>6} {'count':>6} {'MB':>8} {'threads':>8} {'kFLOP/thr':>9}  kernel")
  for k in res["kernels"][:kernels]:
    log(f"{k['flops'] / 1e9:8.2f} {k['flops'] / res['flops']:6.1%} {k['count']:6d} {k['bytes'] / 1e6:8.1f} "
        f"{k['threads']:8d} {k['flops_per_thread'] / 1e3:9.1f}  {k['kernel']}")
  if json_path: write_atomic(json_path, json.dumps(res, indent=1))
  return res

def median_run(runs: list[dict]) -> dict:
  """The run with the median training step of `runs` (an odd count: a real run, not an average), with every run's
  step time and first step kept (the first round's first step compiled what the kernel cache lacked)."""
  best = sorted(runs, key=lambda r: r["train_step_s"])[(len(runs) - 1) // 2]
  return {**best, **{f"{k}_rounds": [r[k] for r in runs] for k in ("train_step_s", "first_step_s")}} if len(runs) > 1 else best

def report(res: dict) -> list[str]:
  cols = [("step s", "train_step_s", ".3f"), ("tok/s", "train_tokens_per_s", ",.0f"), ("first s", "first_step_s", ".1f"),
          ("RSS MB", "peak_rss_mb", ",.0f"), ("sample tok/s", "sample_tokens_per_s", ",.0f"),
          ("x train", "train_speed_ratio", ".2f"), ("x sample", "sample_speed_ratio", ".2f")]
  cell = lambda r, k, f, w: format(r[k], f).rjust(w) if r.get(k) is not None else "-".rjust(w)
  rows = [("tinygrad", res)] + list(res.get("against", {}).items())
  lines = [f"{'':14}" + "".join(f"{h:>14}" for h, _, _ in cols)]
  lines += [f"{name:14}" + "".join(cell(r, k, f, 14) for _, k, f in cols) for name, r in rows]
  lines += [f"{name} ran on {r['device']}: {r['device_name']}" for name, r in rows]
  lines.append(f"sample tok/s: filling one {res['config']['max_seq_len']}-token window from BOS (tinygrad: KV cache; "
               f"torch: llama2.c's sample.py, no cache); tinygrad with llama2.c's exact sliding window past it: "
               f"{res['sample_slide_tokens_per_s']:,.0f} tok/s")
  if ratios := res.get("against", {}).get("torch_eager", {}).get("train_speed_ratios"):
    if len(ratios) > 1:
      lines.append(f"x train against torch_eager in {len(ratios)} interleaved rounds: {', '.join(f'{r:.2f}' for r in ratios)} "
                   f"(spread {min(ratios):.2f}-{max(ratios):.2f}); the table shows the median round of each")
  if "kernel_opts" in res: lines.append(f"tinygrad's CPU kernel table (tinystory/kernel_opts.py): {res['kernel_opts']}")
  lines.append(f"x = tinygrad's speed / that row's, only between rows on the same device; load average "
               f"{res['loadavg_before']:.1f} before, {res['loadavg_after']:.1f} after")
  return lines

def kernel_table(res: dict) -> list[str]:
  if not res.get("kernels"): return []
  lines = [f"the slowest kernels of one replayed forward + backward ({res['kernels_count']} kernels, "
           f"{res['kernels_total_ms']:,.0f} ms in all; parts: the cores a kernel is split over):",
           f"{'ms':>8} {'count':>6} {'parts':>6}  kernel"]
  return lines + [f"{k['ms']:8.1f} {k['count']:6d} {k['parts']:6d}  {k['kernel']}" for k in res["kernels"]]

def roofline_table(res: dict) -> list[str]:
  """The step's kernel families against the peaks measured in the same worker: each family's rate as a share of the
  best sgemm rate and of the copy's bandwidth, and the step against the floor (the model's arithmetic at that rate)."""
  if not (r := res.get("roofline")): return []
  peak, copy, fams = r["sgemm_peak_gflops"], r["copy_gbps"], r["families"]
  step_ms = r["micro_ms"] + r["update_ms"]
  total = {"kernels": sum(f["kernels"] for f in fams.values()), "ms": step_ms,
           "flops": sum(f["flops"] for f in fams.values()), "bytes": sum(f["bytes"] for f in fams.values())}
  lines = [f"roofline of one replayed training step (forward + backward {r['micro_ms']:,.0f} ms, clip + AdamW "
           f"{r['update_ms']:,.0f} ms), by kernel family (GFLOP and GB: tinygrad's estimates of each kernel):",
           f"{'family':12} {'kernels':>7} {'ms':>7} {'share':>6} {'GFLOP':>7} {'GB':>6} {'GFLOP/s':>8} {'GB/s':>6} "
           f"{'of sgemm':>8} {'of copy':>8}"]
  for name, f in [*sorted(fams.items(), key=lambda kv: -kv[1]["ms"]), ("step", total)]:
    gflops, gbps = f["flops"] / f["ms"] / 1e6, f["bytes"] / f["ms"] / 1e6
    lines.append(f"{name:12} {f['kernels']:7d} {f['ms']:7.1f} {f['ms'] / step_ms:6.1%} {f['flops'] / 1e9:7.2f} "
                 f"{f['bytes'] / 1e9:6.2f} {gflops:8.1f} {gbps:6.1f} {gflops / peak:8.1%} {gbps / copy:8.1%}")
  floor_ms = r["model_flops"] / peak / 1e6
  lines.append("this machine, measured in the same process: numpy sgemm " +
               ", ".join(f"{k} {v:,.0f}" for k, v in r["sgemm_gflops"].items()) +
               f" GFLOP/s (M x K x N, best of {r['runs']}); a {r['copy_mb']} MB copy on {r['cores']} cores {copy:,.1f} GB/s")
  lines.append(f"the model's arithmetic (llama2.c's 6N + 12LHQT per token) is {r['model_flops'] / 1e9:,.1f} GFLOP: "
               f"{floor_ms:,.0f} ms at the best sgemm rate ({peak:,.0f} GFLOP/s); the step takes {step_ms:,.0f} ms, "
               f"{step_ms / floor_ms:.1f}x that floor, {r['model_flops'] / step_ms / 1e6 / peak:.1%} of the sgemm peak")
  return lines

if __name__ == "__main__": worker(sys.argv[1:])
