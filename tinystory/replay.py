"""A captured TinyJit replayed on the CPU: its compiled kernels called straight from Python, on every core.

tinygrad 0.14's code generator splits a CPU kernel's outermost output loop into NUM_CPU_THREADS parts (a `core_id`
argument, one part per core), but its CPU runtime calls the parts one after another on the calling thread, so
training used one core of two; and it dispatches each kernel through ~40 us of Python. A Replay (made by
`kernel_replay`) calls the kernels itself, in the JIT's order: a kernel's part 0 on the calling thread and its other
parts on helper threads, each started with a semaphore; ctypes lets go of the GIL while C runs, so the parts run at
once. Parts write disjoint slices of the output (as on a GPU, where tinygrad runs them all at once anyway), so the
numbers are bit for bit the JIT's. Handing a part over costs ~20 us: kernels faster than PARALLEL_MIN_S (timed in the
first replay) keep all their parts on the calling thread. TINYSTORY_THREADS=0 turns the helper threads off.

Why not the smaller change, a patch of CPUProgram.__call__ that runs the parts on this pool under plain TinyJit? It
was measured against this in one sitting (docs/performance.md): training came out even within the machine's noise,
but sampling fell from 2,171-4,464 to 367-421 tokens/s (medians of 3, two series). A sampled token runs 71 kernels
of a few microseconds, none split over cores, and tinygrad's runtime spends ~40 us of Python around each one:
calling them from here is what makes sampling fast.
"""
import ctypes, os, threading, time
from typing import Callable
import numpy as np
from tinygrad import TinyJit
from tinygrad.helpers import ansistrip
from tinygrad.uop.ops import Ops
from tinystory.device import host_view, tinygrad_is_pinned, upload

PARALLEL_MIN_S = 100e-6

class Helpers:
  """Threads that each run one kernel part when told to: go[i] starts helper i on job[i], done[i] says it finished.
  One pool per process (`helpers`), grown as needed and never replaced, so no thread is left waiting for a job that
  never comes; one caller at a time."""
  def __init__(self): self.go, self.done, self.job = [], [], []

  def grow(self, n: int) -> "Helpers":
    """At least n helper threads."""
    for i in range(len(self.go), n):
      self.go.append(threading.Semaphore(0))
      self.done.append(threading.Semaphore(0))
      self.job.append(None)
      threading.Thread(target=self.loop, args=(i,), daemon=True, name=f"tinystory-kernel-{i}").start()
    return self

  def loop(self, i: int) -> None:
    while True:
      self.go[i].acquire()
      try: self.job[i][0](*self.job[i][1])
      finally: self.done[i].release()

  def run(self, fxn, parts: list[tuple]) -> None:
    """fxn(*parts[0]) here and fxn(*parts[i]) on helper i-1, returning when all have finished, also when interrupted:
    no part may still be writing when the next kernel starts."""
    started = 0
    try:
      for i, args in enumerate(parts[1:]):
        self.job[i] = (fxn, args)
        self.go[i].release()
        started += 1
      fxn(*parts[0])
    finally:
      for i in range(started): self.done[i].acquire()

_helpers = Helpers()
def helpers(n: int) -> Helpers: return _helpers.grow(n)

def threads_on() -> bool:
  """False where TINYSTORY_THREADS=0: every kernel part then runs on the calling thread (one core), as in TinyJit."""
  return os.environ.get("TINYSTORY_THREADS", "1").strip() != "0"

def usable_cores() -> int:
  """The cores this process may run on (its affinity mask, where the OS has one)."""
  return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1

def group_parts(parts: list[tuple], cores: int) -> list[list[tuple]]:
  """A kernel's parts in at most `cores` groups of consecutive parts, as even as can be."""
  n = min(len(parts), max(cores, 1))
  return [parts[i * len(parts) // n:(i + 1) * len(parts) // n] for i in range(n)]

def run_group(fxn, group: list[tuple]) -> None:
  for args in group: fxn(*args)

class Replay:
  """`replay(**var_values)` runs the captured kernels, each a list of per-core argument tuples, in the JIT's order.
  `captured` (the JIT's CapturedJit) is held because it keeps alive the buffers whose addresses the arguments are."""
  def __init__(self, kernels: list[tuple[str, Callable, list[tuple]]], var_args: dict[str, list[ctypes.c_uint64]], captured):
    self.kernels, self.var_args, self.captured, self.parallel = kernels, var_args, captured, None
    # a kernel split into more parts than there are cores (NUM_CPU_THREADS above the core count) runs as one group of
    # consecutive parts per core: more threads than cores would only take turns, each handover costing more than a part
    self.jobs = [[(fxn, g) for g in group_parts(parts, usable_cores())] for _, fxn, parts in kernels]
    self.helpers = helpers(max(map(len, self.jobs)) - 1) if kernels and threads_on() else None

  def __call__(self, profile: list | None = None, **values: int) -> None:
    """Run the kernels; with a `profile` list, append (kernel name, number of parts, seconds) for each."""
    for name, v in values.items():
      for arg in self.var_args.get(name, ()): arg.value = v
    if self.parallel is None: return self.first_run()
    for (name, fxn, parts), jobs, par in zip(self.kernels, self.jobs, self.parallel, strict=True):
      if profile is not None: t = time.perf_counter()
      if par: self.helpers.run(run_group, jobs)
      else:
        for args in parts: fxn(*args)
      if profile is not None: profile.append((name, len(parts), time.perf_counter() - t))

  def programs(self) -> list:
    """The kernels' PROGRAM uops (what tinygrad compiled: its source, its estimates), in the order they run."""
    return [call.src[0] for call in self.captured.linear.src]

  def first_run(self) -> None:
    """All parts on this thread, timing each kernel: the slow ones (with more than one part) go parallel from now."""
    parallel = []
    for (_, fxn, parts), jobs in zip(self.kernels, self.jobs):
      t = time.perf_counter()
      for args in parts: fxn(*args)
      parallel.append(self.helpers is not None and len(jobs) > 1 and time.perf_counter() - t >= PARALLEL_MIN_S)
    self.parallel = parallel

def kernel_replay(jit, inputs: tuple) -> Replay | None:
  """The captured TinyJit `jit`, run on `inputs` (the tensors it was captured with), as a Replay. The buffers are the
  JIT's own, fixed here: later calls read new inputs from the same tensors. A Variable's value is an argument given
  to the kernels that use it. None where the kernels are not plain single-device CPU programs (another device,
  tinygrad's HCQ2 mode, a copy) or the JIT writes an input, and on a tinygrad other than TINYGRAD (the internals read
  here are 0.14's): call the JIT."""
  if not tinygrad_is_pinned(): return None
  # imported here, behind the pin: another tinygrad may lack these internals, and then the JIT runs as it is
  from tinygrad.engine.jit import _prepare_jit_inputs
  from tinygrad.engine.realize import get_runtime, resolve_params, unwrap_multi
  from tinygrad.runtime.ops_cpu import CPUProgram
  input_uops = _prepare_jit_inputs(inputs, {})[0]
  if any(u in jit.captured._written_uops for u in input_uops): return None  # TinyJit copies such inputs first
  kernels, var_args = [], {}
  for call in jit.captured.linear.src:
    if (ast := call.src[0]).op is not Ops.PROGRAM or not all(isinstance(s, int) for s in ast.arg.global_size): return None
    if isinstance(dev := call.src[1].device, tuple): return None  # one kernel on several devices (Tensor.shard)
    prg = get_runtime(dev, ast)
    if not isinstance(prg, CPUProgram) or prg.lvp: return None
    resolved = resolve_params(call, input_uops)
    if len(per_device := list(unwrap_multi(call, [resolved[i] for i in ast.arg.globals]))) != 1: return None
    (bufs, _), = per_device
    args = [ctypes.c_uint64(b.ensure_allocated().get_buf(dev).va_addr) for b in bufs]  # as CPUProgram.__call__ does
    for v in ast.arg.vars:
      args.append(ctypes.c_uint64(0))
      if v.expr not in prg.runtimevars: var_args.setdefault(v.expr, []).append(args[-1])
    core = prg.runtimevars.get("core_id")  # a kernel split over cores: one argument tuple per core id
    parts = [tuple(ctypes.c_uint64(c) if j == core else x for j, x in enumerate(args))
             for c in range(ast.arg.global_size[0] if core is not None else 1)]
    kernels.append((ansistrip(ast.arg.name), prg.fxn, parts))
  return Replay(kernels, var_args, jit.captured)

class ReplayJit:
  """fxn(*inputs, *variables) compiled: TinyJit runs the first two calls (the second captures the kernels), then a
  kernel_replay of them where there is one, else TinyJit. The inputs are fixed tensors (device.zeros: realized, each
  its own buffer); a call given arrays, one per input, writes them into the inputs first (`upload`: on the CPU through
  host views), a call given none reads the inputs as they are; a call names the value of each Variable. compile=False
  runs fxn eagerly every time (same numbers). `profile`: a list that a replayed call appends each kernel's (name,
  parts, seconds) to (other calls leave it be)."""
  def __init__(self, fxn: Callable, inputs: tuple, variables: tuple = (), compile: bool = True):
    self.fxn, self.inputs, self.variables, self.names = fxn, inputs, variables, {v.expr for v in variables}
    self.views = tuple(map(host_view, inputs))
    self.jit, self.replay = TinyJit(fxn) if compile else None, None

  def __call__(self, *arrays: np.ndarray, profile: list | None = None, **values: int):
    if values.keys() != self.names: raise TypeError(f"expected values for {sorted(self.names)}, got {sorted(values)}")
    if arrays:
      # replayed, every kernel ran on this thread and the views taken at the start will do; else views taken now,
      # since taking one waits for the kernels tinygrad may still be running (HCQ2 mode, where nothing is replayed)
      views = self.views if self.replay is not None else map(host_view, self.inputs)
      for t, view, arr in zip(self.inputs, views, arrays, strict=True): upload(t, view, arr)
    if self.replay is not None:
      self.replay(profile, **values)
      return self.jit.captured.ret
    if self.jit is None: return self.fxn(*self.inputs, *(values[v.expr] for v in self.variables))
    ret = self.jit(*self.inputs, *(v.bind(values[v.expr]) for v in self.variables))
    if self.jit.cnt == 2 and self.jit.captured is not None: self.replay = kernel_replay(self.jit, self.inputs)  # captured now
    return ret
