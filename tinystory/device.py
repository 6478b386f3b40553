"""The package's adapter to tinygrad's devices: the tinygrad device for `--device`, named as llama2.c/torch name it (a
comma-separated list, cuda:0,cuda:1, is data parallel training over those devices: docs/devices.md), what differs by
device (`choose_for`), arrays placed like tensors, the dropout RNG state a checkpoint saves, which only tinygrad's
private counters hold (tests/test_structure.py keeps tinygrad's private names here, in replay.py and kernel_opts.py),
and every change the package makes to tinygrad's process-wide state (tests/test_structure.py keeps them here):

each for a block only, through `patched` (put back after it, also on an error; tinygrad's compile worker pool, if
started in the block, keeps the block's worker lifetime for the process: compile_workers_kept): while a command runs
on its device (`using_device`), DEV and, on NVIDIA GPUs, ALLOW_TF32 (settings_for); while a train.TrainSteps is used,
LRU=0, the kernel table's hooks in tinygrad's code generator (kernel_opts.hooks) and longer-lived compile workers
(compile_workers_kept); bench's source-only compilers and kernel counter on the NULL device; the search tool's
recorder.
"""
import contextlib, functools, os
from importlib import metadata
from dataclasses import dataclass
from typing import Iterator
import numpy as np
from tinygrad import Device, Tensor
from tinygrad.dtype import _to_np_dtype
from tinystory import UserError
from tinystory.log import log

def tinygrad_device(name: str, given: str) -> str:
  """'cpu' -> CPU, 'mps' -> METAL, 'cuda:1' -> CUDA:1 (tinygrad's name), checked to open here. `given`: the option
  as typed, for errors."""
  base, _, index = name.strip().partition(":")
  dev = {"cpu": "CPU", "mps": "METAL"}.get(base.lower(), base.upper()) + (f":{index}" if index else "")
  if index and not index.isdigit(): raise UserError(f"{given}: expected DEVICE or DEVICE:N (e.g. cuda:1), got {name!r}")
  try: Device[dev]
  except Exception as e: raise UserError(f"{given}: tinygrad cannot open {dev} here ({type(e).__name__}: {e})") from None
  return Device.canonicalize(dev)

@contextlib.contextmanager
def using_device(name: str, several: bool = False, option: str = "--device") -> Iterator[str | tuple[str, ...]]:
  """`name` (the --device option's value) as tinygrad's default device for the block, with its settings (settings_for),
  and tinygrad's name for it; the settings as they were after it. With `several`, a comma-separated list is allowed:
  the default is its first device and the tuple of all is given (for Tensor.shard)."""
  devices = device_names(name, several, option)
  with patched(settings_for(devices)): yield devices

def device_names(name: str, several: bool = False, option: str = "--device") -> str | tuple[str, ...]:
  """tinygrad's name for the device `name` names (the tuple of several with `several`), each checked to open here."""
  names = name.split(",")
  if len(names) > 1 and not several:
    raise UserError(f"{option}={name}: one device here (several, comma-separated, are for data parallel training)")
  # a single device is the backend's first (tinygrad's DEV names a backend); refused before anything is opened
  base_name, _, index = names[0].strip().partition(":")
  if len(names) == 1 and index not in ("", "0"):
    if base_name.lower() == "cpu":
      raise UserError(f"{option}={name}: the CPU is one device here (every kernel already runs on all its cores): use {option}=cpu")
    raise UserError(f"{option}={name}: a single device is the backend's first one here: pick the GPU with e.g. "
                    f"CUDA_VISIBLE_DEVICES={index} and {option}={base_name.lower()}")
  devices = tuple(tinygrad_device(n, f"{option}={name}") for n in names)
  if len(set(devices)) < len(devices): raise UserError(f"{option}={name}: a device is listed twice")
  return devices if len(devices) > 1 else devices[0]

def settings_for(device: str | tuple[str, ...]) -> dict[str, object]:
  """tinygrad's process-wide settings for training and sampling on `device` (device_names' result): DEV, its default
  device, names the backend (DEV=CUDA, not one of its devices); on NVIDIA GPUs (CUDA, NV) float32 matmuls use the
  tensor cores in TF32, as the seed's PyTorch train.py allows them (torch.backends.cuda.matmul.allow_tf32), where
  tinygrad leaves them off unless ALLOW_TF32=1 (ALLOW_TF32=0 in the environment keeps full float32 matmuls). On a CPU
  with AVX-512, clang may use its 512-bit registers (cpu_target)."""
  backend = devices_of(device)[0].split(":")[0]
  return {"DEV": cpu_target() if backend == "CPU" else backend,
          **({"ALLOW_TF32": 1} if backend in ("CUDA", "NV") and "ALLOW_TF32" not in os.environ else {})}

@functools.cache
def cpu_target(cpuinfo: str = "/proc/cpuinfo") -> str:
  """DEV for the CPU: tinygrad's Clang renderer for this machine (-march=native) and, where the CPU has AVX-512
  (Linux's cpuinfo flags avx512f), clang's -mprefer-vector-width=512: for most such CPUs clang otherwise keeps to
  256-bit registers, and the wide kernels (kernel_opts.wide_memory_coalescing) run 1.3x faster in 512-bit ones. The
  kernels compute the same floats either way: clang vectorizes the same scalar code, without reassociating it."""
  try: avx512 = any(line.startswith("flags") and " avx512f" in line for line in open(cpuinfo))
  except OSError: avx512 = False
  return "CPU:CLANG:x86_64,native,prefer-vector-width=512" if avx512 and os.uname().machine == "x86_64" else "CPU"

WEIGHT_GRAD_CHUNK = 256  # positions per partial sum of a weight's gradient: 8,192 a step -> 32 partial sums

@dataclass(frozen=True)
class Choices:
  """What differs by device and is handed to the code it concerns, not set in it (choose_for's answer)."""
  grad_chunk: int = 0  # positions per partial sum of a weight's gradient (Transformer's grad_chunk); 0: one sum

def choose_for(device: str | tuple[str, ...]) -> Choices:
  """What the model does differently on a device (device_names' result) or a backend, handed to it (tinygrad's own
  settings for the device: settings_for). Today every device makes the same choice:
  - Each weight's gradient is summed over chunks of 256 positions or more (at most 32 chunks), then over the chunks
    (Choices.grad_chunk, model.grad_parts). On GPUs one long sum per output leaves most of the GPU idle; on the CPU a
    chunk of the activations and gradients (256 positions) stays in the cache while all the weight's outputs are
    summed over it, where over all 8,192 positions each tile of outputs reads them from memory (2-3x slower)."""
  return Choices(grad_chunk=WEIGHT_GRAD_CHUNK)

def devices_of(device: str | tuple[str, ...]) -> tuple[str, ...]:
  """device_names' result (or a tensor's .device) as a tuple: one device, or the several of data parallel training."""
  return device if isinstance(device, tuple) else (device,)

def zeros(shape: tuple[int, ...], device: str | tuple[str, ...] | None = None, dtype=None, axis: int | None = None):
  """Realized float32 (or `dtype`) zeros in a buffer of their own (a compiled function's fixed input, an accumulator) on
  `device`: None the default one; several (a tuple) sharded along `axis`, replicated where it is None."""
  from tinygrad import Tensor, dtypes
  t = Tensor.zeros(*shape, dtype=dtype or dtypes.float32, device=None if isinstance(device, tuple) else device)
  return (t.shard(device, axis) if isinstance(device, tuple) else t).contiguous().realize()

def tensor_like(t, arr: np.ndarray):
  """arr as a tensor on t's device, sharded as t is (replicated, or split along the same axis): what t.assign takes."""
  return Tensor(arr).shard(t.device, t.uop.axis) if isinstance(t.device, tuple) else Tensor(arr, device=t.device)

# *** dropout RNG state (tinygrad's per-device counter), so a resumed run draws the same masks ***

def rng_state(device: str | tuple[str, ...]) -> dict:
  """The seed and the first device's counter; data parallel adds the other devices' counters (more_counters)."""
  counters = [c.numpy().tolist() if (c := Tensor._device_rng_counters.get(d)) is not None else None
              for d in devices_of(device)]
  return {"seed": Tensor._seed, "counter": counters[0], **({"more_counters": counters[1:]} if len(counters) > 1 else {})}

def set_rng_state(state: dict, device: str | tuple[str, ...]) -> None:
  """Restore rng_state's counters, the devices' seeds created in order as the first dropout creates them. A device the
  state has no counter for (a run resumed on more devices) starts its own."""
  Tensor.manual_seed(state["seed"])
  counters = [state["counter"], *state.get("more_counters", [])]
  for d, counter in zip(devices_of(device), counters):
    if counter is None: break
    Tensor._next_counter(d, 0)  # creates the device's seed and counter
    Tensor._device_rng_counters[d].assign(Tensor(np.array(counter, np.uint32), device=d)).realize()

# *** tensors read and written from the host ***

def host_view(t) -> np.ndarray | None:
  """A writable numpy view of a realized tensor's memory when its device shares memory with the host (CPU), else
  None. Taking the view synchronises the device; the host may touch the memory until the next kernel launch."""
  if isinstance(t.device, tuple): return None  # on several devices (Tensor.shard)
  buf = t.uop.buffer
  if not hasattr(buf.allocator, "_as_buffer"): return None
  return np.frombuffer(buf.as_memoryview(force_zero_copy=True), _to_np_dtype(t.dtype)).reshape(t.shape)

def read(t) -> np.ndarray:
  """A copy of a realized tensor's values: on CPU straight from its memory, without tinygrad's copy machinery."""
  return t.numpy() if (view := host_view(t)) is None else view.copy()

def upload(t, view: np.ndarray | None, arr: np.ndarray) -> None:
  """Write arr into the realized tensor t (same shape and dtype), through `view` = host_view(t) where there is one."""
  if arr.shape != t.shape or arr.dtype != _to_np_dtype(t.dtype):
    raise ValueError(f"expected {np.dtype(_to_np_dtype(t.dtype))} values of shape {t.shape}, got {arr.dtype} {arr.shape}")
  if view is not None: view[:] = arr
  else: t.assign(tensor_like(t, arr)).realize()

# *** the tinygrad whose internals this package reads ***

TINYGRAD = "0.14.0"  # setup.cfg's pin

def tinygrad_version() -> str:
  """The installed tinygrad's version, from its distribution's metadata: tinygrad itself has no __version__. 'unknown'
  for one imported from a directory that was never installed (a checkout on PYTHONPATH)."""
  try: return metadata.version("tinygrad")
  except metadata.PackageNotFoundError: return "unknown"

@functools.cache
def tinygrad_is_pinned() -> bool:
  if (v := tinygrad_version()) == TINYGRAD: return True
  log(f"note: tinygrad {v} is not {TINYGRAD}, whose internals replay.py and kernel_opts.py read: kernels run through "
      f"TinyJit, on one core, as tinygrad's heuristics optimise them")
  return False

# *** tinygrad's process-wide state, changed for a block ***

# tinygrad replaces each compile worker after 16 kernels (BEAM_MAX_TASKS_PER_CHILD, sized for BEAM's many candidates),
# and each new worker warms its caches again: 1.5-2 s of the seed config's first step, 859 kernels on two workers
COMPILE_WORKER_TASKS = 1024

def compile_workers_kept() -> tuple:
  """patched's attrs: tinygrad's compile workers, where their pool starts in the block, each kept for
  COMPILE_WORKER_TASKS kernels (the environment's BEAM_MAX_TASKS_PER_CHILD, where set, as before)."""
  import tinygrad.engine.worker as worker
  from tinygrad.helpers import getenv
  def worker_getenv(key: str, default=0):
    return int(os.environ.get(key, COMPILE_WORKER_TASKS)) if key == "BEAM_MAX_TASKS_PER_CHILD" else getenv(key, default)
  return ((worker, "getenv", worker_getenv),)

@contextlib.contextmanager
def patched(settings: dict[str, object] | None = None, attrs: tuple[tuple[object, str, object], ...] = ()) -> Iterator[None]:
  """tinygrad's ContextVars (`settings`: name -> value, as in tinygrad's Context) and module attributes (`attrs`:
  (module, name, value), such as a hook in its code generator) changed for the block, and put back as they were after
  it, also on an error. Blocks nest; each puts back what it found, so they end in the reverse order of their start."""
  from tinygrad import Context
  old = [(m, name, getattr(m, name)) for m, name, _ in attrs]
  try:
    for m, name, v in attrs: setattr(m, name, v)
    with Context(**(settings or {})): yield
  finally:
    for m, name, v in reversed(old): setattr(m, name, v)
