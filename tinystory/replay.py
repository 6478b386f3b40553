"""A captured TinyJit replayed on the CPU: its compiled kernels called straight from Python, each on every core.

tinygrad 0.14's CPU device sends every kernel through Python to one worker thread. Its code generator already splits
a kernel's outer loop into NUM_CPU_THREADS parts (a `core_id` argument, one part per core), but the runtime runs the
parts one after another on that one thread, so training used one core of two. `kernel_replay` calls the kernels
itself, in the JIT's order: a kernel's part 0 on the calling thread and its other parts on helper threads, each
started with a semaphore. ctypes lets go of the GIL while a kernel runs, so the parts run at the same time. The parts
write disjoint outputs, so the numbers are bit for bit the JIT's. Handing a part to a helper costs ~20 us: kernels
faster than PARALLEL_MIN_S (timed during the first replay) run all their parts on the calling thread.
"""
import ctypes, threading, time
from typing import Callable
import numpy as np

PARALLEL_MIN_S = 100e-6

def host_view(t) -> np.ndarray | None:
  """A writable numpy view of a realized tensor's memory when its device shares memory with the host (CPU), else
  None. Taking the view synchronises the device; the host may touch the memory until the next kernel launch."""
  from tinygrad.dtype import _to_np_dtype
  buf = t.uop.buffer
  if not hasattr(buf.allocator, "_as_buffer"): return None
  return np.frombuffer(buf.as_memoryview(force_zero_copy=True), _to_np_dtype(t.dtype)).reshape(t.shape)

def read(t) -> np.ndarray:
  """A copy of a realized tensor's values: on CPU straight from its memory, without tinygrad's copy machinery."""
  return t.numpy() if (view := host_view(t)) is None else view.copy()

def upload(t, view: np.ndarray | None, arr: np.ndarray) -> None:
  """Write arr into the realized tensor t, through `view` = host_view(t) where there is one."""
  from tinygrad import Tensor
  if view is not None: view[:] = arr
  else: t.assign(Tensor(arr, device=t.device)).realize()

class Helpers:
  """Threads that each run one kernel part when told to: go[i] starts helper i on job[i], done[i] says it finished."""
  def __init__(self, n: int):
    self.go, self.done = [threading.Semaphore(0) for _ in range(n)], [threading.Semaphore(0) for _ in range(n)]
    self.job: list = [None] * n
    for i in range(n): threading.Thread(target=self.loop, args=(i,), daemon=True, name=f"tinystory-kernel-{i}").start()

  def loop(self, i: int) -> None:
    while True:
      self.go[i].acquire()
      fxn, args = self.job[i]
      fxn(*args)
      self.done[i].release()

  def run(self, fxn, parts: list[tuple]) -> None:
    """fxn(*parts[0]) here and fxn(*parts[i]) on helper i-1, returning when all have finished."""
    for i, args in enumerate(parts[1:]):
      self.job[i] = (fxn, args)
      self.go[i].release()
    fxn(*parts[0])
    for i in range(len(parts) - 1): self.done[i].acquire()

_helpers: Helpers | None = None
def helpers(n: int) -> Helpers:
  global _helpers
  if _helpers is None or len(_helpers.go) < n: _helpers = Helpers(n)
  return _helpers

class Replay:
  """`run(**var_values)`: the captured kernels, each as a list of per-core argument tuples, in the JIT's order."""
  def __init__(self, kernels: list[tuple[Callable, list[tuple]]], var_args: dict[str, list[ctypes.c_uint64]]):
    self.kernels, self.var_args, self.parallel = kernels, var_args, None
    self.helpers = helpers(max(len(parts) for _, parts in kernels) - 1) if kernels else None

  def __call__(self, **values: int) -> None:
    from tinygrad import Device
    Device["CPU"].synchronize()  # whatever tinygrad itself queued (an upload, a copy) lands before the kernels read it
    for name, v in values.items():
      for arg in self.var_args.get(name, ()): arg.value = v
    if self.parallel is None: return self.first_run()
    for (fxn, parts), par in zip(self.kernels, self.parallel):
      if par: self.helpers.run(fxn, parts)
      else:
        for args in parts: fxn(*args)

  def first_run(self) -> None:
    """All parts on this thread, timing each kernel: the slow ones (with more than one part) go parallel from now."""
    self.parallel = []
    for fxn, parts in self.kernels:
      t = time.perf_counter()
      for args in parts: fxn(*args)
      self.parallel.append(len(parts) > 1 and time.perf_counter() - t >= PARALLEL_MIN_S)

def kernel_replay(jit, inputs: tuple) -> Replay | None:
  """The captured TinyJit `jit`, run on `inputs` (the tensors it was captured with), as a Replay. The buffers are the
  JIT's own, fixed here: later calls read new inputs from the same tensors. A Variable's value is an argument given
  to the kernels that use it. None where the kernels are not plain CPU programs (another device, tinygrad's HCQ2
  mode) or the JIT writes an input: call the JIT."""
  from tinygrad.engine.jit import _prepare_jit_inputs
  from tinygrad.engine.realize import get_runtime, resolve_params, unwrap_multi
  from tinygrad.runtime.ops_cpu import CPUProgram
  from tinygrad.uop.ops import Ops
  input_uops = _prepare_jit_inputs(inputs, {})[0]
  if any(u in jit.captured._written_uops for u in input_uops): return None  # TinyJit copies such inputs first
  kernels, var_args = [], {}
  for call in jit.captured.linear.src:
    if (ast := call.src[0]).op is not Ops.PROGRAM or not all(isinstance(s, int) for s in ast.arg.global_size): return None
    prg = get_runtime(dev := call.src[1].device, ast)
    if not isinstance(prg, CPUProgram) or prg.lvp: return None
    resolved = resolve_params(call, input_uops)
    (bufs, _), = unwrap_multi(call, [resolved[i] for i in ast.arg.globals])
    args = [ctypes.c_uint64(b.ensure_allocated().get_buf(dev).va_addr) for b in bufs]  # as CPUProgram.__call__ does
    for v in ast.arg.vars:
      args.append(ctypes.c_uint64(0))
      if v.expr not in prg.runtimevars: var_args.setdefault(v.expr, []).append(args[-1])
    core = prg.runtimevars.get("core_id")  # a kernel split over cores: one argument tuple per core id
    parts = [tuple(ctypes.c_uint64(c) if j == core else x for j, x in enumerate(args))
             for c in range(ast.arg.global_size[0] if core is not None else 1)]
    kernels.append((prg.fxn, parts))
  return Replay(kernels, var_args)

class ReplayJit:
  """fxn(*inputs, *variables) compiled: TinyJit runs the first two calls (the second captures the kernels), then a
  kernel_replay of them where there is one, else TinyJit. The inputs are fixed tensors: upload new values into them
  before a call; a call names each Variable's value. compile=False runs fxn eagerly every time (same numbers)."""
  def __init__(self, fxn: Callable, inputs: tuple, variables: tuple = (), compile: bool = True):
    from tinygrad import TinyJit
    self.fxn, self.inputs, self.variables = fxn, inputs, variables
    self.jit, self.replay = TinyJit(fxn) if compile else None, None

  def __call__(self, **values: int):
    if self.replay is not None:
      self.replay(**values)
      return self.jit.captured.ret
    if self.jit is None: return self.fxn(*self.inputs, *(values[v.expr] for v in self.variables))
    ret = self.jit(*self.inputs, *(v.bind(values[v.expr]) for v in self.variables))
    if self.jit.cnt == 2: self.replay = kernel_replay(self.jit, self.inputs)  # captured just now
    return ret
