"""Searched kernel optimisations for the training step on the CPU: a fixed table, not a search at run time.

tinygrad picks each kernel's optimisations (upcasts, unrolls: the `Opt`s) with hand-written heuristics; BEAM=n picks
them by timing candidates, which finds kernels 1.1-5x faster for this model but takes many minutes per step and
picks by timings, so two runs (or a run and its resume) can get different kernels and different floats.
`kernel_opts.json` holds the result of one search (`python tools/search_kernel_opts.py`, a tool outside the package:
it drives the training step, which imports this module): for the slowest kernels of the seed config's training step,
keyed by the kernel's AST (`kernel_key`: its exact ops and shapes), the fastest opts it timed (register tiles, BEAM's,
or none at all, for clang's loop vectorizer) where they beat the heuristics by 5% or more. `hooks()` make tinygrad's
code generator apply those opts to those kernels on the CPU (then split them over cores as its heuristics would)
while a train.TrainSteps holds them (device.patched); every other kernel, device or shape is optimised as before. The table is data, so every run gets the same kernels: resume and replay stay
bit-exact. A kernel computes the same sums with another loop order, so the floats differ from the heuristics' kernels
by rounding, as BEAM's do.

The AST keys belong to tinygrad 0.14.0 (the pin) and to the model code as it is: tests/test_kernel_opts.py checks that
every entry still matches a kernel of the seed step, so a change that makes the table stale fails there; rerun the
search then. TINYSTORY_KERNEL_OPTS=0 turns the table off; TINYSTORY_KERNEL_OPTS=FILE uses a table searched elsewhere.

With the table, one change to how tinygrad writes CPU kernels (`wide_memory_coalescing`): its code generator unrolls
an UPCAST into scalar arithmetic and leaves the vector registers to clang, which vectorizes as wide as the loads and
stores it is given, and tinygrad folds those to at most 4 floats on the CPU. So a 16-wide tile of a matmul became
four 4-wide (SSE) FMAs and spills (about 60 GFLOP/s for both cores); with loads and stores of up to 16 floats, clang
writes it as AVX-512 FMAs on whole registers (about 120; device.settings_for lets clang use 512-bit registers where
the CPU has them). The arithmetic is the same scalar code in the same order: only the vector width differs.
"""
import functools, hashlib, json, os
from dataclasses import replace
from pathlib import Path
from tinystory import UserError
from tinystory.device import patched, tinygrad_is_pinned

# tinygrad's code generator is imported where it is used, not here: this module imports on any tinygrad, and only
# the pinned one (hooks) has the internals it replaces

TABLE = Path(__file__).with_name("kernel_opts.json")

def table_path() -> Path | None:
  """TINYSTORY_KERNEL_OPTS: 1 (the default) the shipped table, 0 none, else the path of a table of one's own (written
  by `python tools/search_kernel_opts.py --out FILE` on one's machine)."""
  v = os.environ.get("TINYSTORY_KERNEL_OPTS", "1").strip()
  return None if v == "0" else TABLE if v in ("", "1") else Path(v).resolve()

@functools.cache
def load_table(path: Path) -> tuple[dict[str, list], str]:
  """(kernel key -> opts [(OptOps name, axis, arg), ...], the file's sha256) from a table file, each opt checked."""
  from tinygrad.codegen.opt import OptOps
  try:
    raw = path.read_bytes()
    out = {k["key"]: k["opts"] for k in json.loads(raw.decode("utf-8"))["kernels"]}
    for opts in out.values():
      for op, axis, arg in opts:
        if op not in OptOps.__members__ or not isinstance(axis, int | None) or not isinstance(arg, int | list | None):
          raise ValueError(f"{[op, axis, arg]} is not an opt (OptOps name, axis, arg)")
    return out, hashlib.sha256(raw).hexdigest()
  except (OSError, ValueError, KeyError, TypeError) as e:
    raise UserError(f"TINYSTORY_KERNEL_OPTS={path}: not a kernel table ({type(e).__name__}: {e}); expected 0, 1 or a "
                    f"file written by tools/search_kernel_opts.py") from None

def table() -> dict[str, list]: return {} if (path := table_path()) is None else load_table(path)[0]

def describe() -> str:
  """Which table training uses, for bench's record and the run's versions: its file, size and content hash."""
  if (path := table_path()) is None: return "none (TINYSTORY_KERNEL_OPTS=0): tinygrad's heuristics for every kernel"
  opts, digest = load_table(path)
  return f"{path.name if path == TABLE else path} (sha256 {digest[:12]}), {len(opts)} searched kernels, for tinygrad's Clang CPU renderer"

def is_cpu(ren) -> bool:
  from tinygrad.renderer.cstyle import ClangRenderer
  return isinstance(ren, ClangRenderer)  # the CPU's (and the NULL device's when it renders for the CPU)

def thread(k) -> None:
  """Split k's outermost possible axis over the cores, as tinygrad's heuristics do last (hand_coded_optimizations,
  its 'threading' block, 0.14.0): BEAM timed each candidate on one core, so the table's opts hold no THREAD."""
  from tinygrad.codegen.opt import Opt, OptOps, KernelOptError
  from tinygrad.helpers import prod
  from tinygrad.uop.ops import AxisType, resolve
  if not k.ren.has_threads or k.ren.global_max is None: return
  for threads in (32, 16, 12, 8, 6, 5, 4, 3, 2):
    if threads > k.ren.global_max[0] or resolve(prod(k.full_shape) // (128 << 10) < threads): continue
    for axis in k.axes_of(AxisType.WEAK):
      if k.full_shape[axis] % threads == 0:
        try: k.apply_opt(Opt(OptOps.THREAD, axis, threads))
        except KernelOptError: pass
        break
    if k.applied_opts and k.applied_opts[-1].op is OptOps.THREAD: return

def scheduler(ast, ren, opts: list):
  """tinygrad's Scheduler for ast with `opts` applied, as apply_opts starts one."""
  from tinygrad.codegen.opt import Opt, OptOps
  from tinygrad.codegen.opt.postrange import Scheduler
  k = Scheduler(ast, ren)
  k.convert_loop_to_global()
  for op, axis, arg in opts: k.apply_opt(Opt(OptOps[op], axis, tuple(arg) if isinstance(arg, list) else arg))
  return k

@functools.cache
def tinygrad_apply_opts():
  import tinygrad.codegen.opt.postrange as postrange
  return postrange.apply_opts

def kernel_key(ast) -> str:
  """ast's key (its exact ops and shapes) with its buffers' device left out: the CPU's kernel and the NULL device's
  rendering of it for the CPU have the same."""
  from tinygrad.uop.ops import Ops
  params = {p: p.replace(arg=replace(p.arg, device=None)) for p in ast.toposort() if p.op is Ops.PARAM and p.arg.device is not None}
  return (ast.substitute(params) if params else ast).key.hex()

def apply_opts(opts: dict[str, list], ast, ren, beam: int = 0):
  """tinygrad.codegen's apply_opts, the table `opts` first: where it has ast (on the CPU, where tinygrad's heuristics
  would choose: no opts given, no BEAM, no NOOPT), its opts and the threading; else, and where the opts do not fit the
  kernel (a table of one's own), tinygrad's own choice."""
  from tinygrad.codegen.opt import KernelOptError
  from tinygrad.helpers import NOOPT
  chooses = ast.tag is None and not beam and not NOOPT and ast.arg is not None and ast.arg.opts_to_apply is None \
            and ast.arg.applied_opts == () and is_cpu(ren)
  if not chooses or (found := opts.get(kernel_key(ast))) is None: return tinygrad_apply_opts()(ast, ren, beam)
  try: k = scheduler(ast, ren, found)
  except KernelOptError: return tinygrad_apply_opts()(ast, ren, beam)
  thread(k)
  return k.get_optimized_ast(name_override=ast.arg.name if ast.arg.name != "test" else None)

@functools.cache
def tinygrad_compile_kernel():
  import tinygrad.engine.realize as realize
  return realize._compile_kernel

# tinygrad 0.14.0's memory_coalescing folds float loads and stores to vectors of these lengths where the renderer
# supports float4 (codegen/late/coalesce.py): its source holds the list once, and wide_memory_coalescing widens it
FLOAT4_LENGTHS, WIDE_LENGTHS = "else [4,2]", "else [16,8,4,2]"

@functools.cache
def wide_memory_coalescing():
  """tinygrad's memory_coalescing, compiled from its own source with the float lengths 16 and 8 allowed besides 4 and
  2 (the module docstring says why). A vector of 16 floats is 64 bytes, aligned as tinygrad aligns its vectors (to
  their size): the lengths must still divide the offset, and tinygrad's buffers start on 256-byte boundaries."""
  import inspect, tinygrad.codegen.late.coalesce as coalesce
  src = inspect.getsource(coalesce.memory_coalescing)
  assert src.count(FLOAT4_LENGTHS) == 1, "tinygrad's memory_coalescing is not 0.14.0's"
  namespace = dict(vars(coalesce))
  exec(compile(src.replace(FLOAT4_LENGTHS, WIDE_LENGTHS), coalesce.__file__, "exec"), namespace)
  return namespace["memory_coalescing"]

def codegen_hooks(opts: dict[str, list]) -> tuple:
  """The changes to tinygrad's code generator, as device.patched's attrs: apply_opts with the table `opts`, and the
  wide memory coalescing."""
  import tinygrad.codegen as codegen
  return ((codegen, "apply_opts", functools.partial(apply_opts, opts)), (codegen, "memory_coalescing", wide_memory_coalescing()))

def compile_kernel(path: str, task):
  """tinygrad's _compile_kernel with the table at `path` applied: tinygrad compiles in spawned worker processes, which
  get this function (pickled by name, with the path) and so generate code as the parent does, for each task."""
  with patched(attrs=codegen_hooks(load_table(Path(path))[0])): return tinygrad_compile_kernel()(task)

def hooks() -> tuple:
  """What applying the table changes in tinygrad, as device.patched's attrs: its code generator (codegen_hooks), and the
  function its compile workers run. Empty (nothing to change) where TINYSTORY_KERNEL_OPTS=0 or tinygrad is not the pinned
  version (whose internals these replace)."""
  if not (opts := table()) or not tinygrad_is_pinned(): return ()
  import tinygrad.engine.realize as realize
  tinygrad_apply_opts(), tinygrad_compile_kernel()  # tinygrad's own, kept before they are replaced
  # realize's _compile_kernel is looked up by lower_and_compile at each call, and pickled by name to the workers
  return (*codegen_hooks(opts), (realize, "_compile_kernel", functools.partial(compile_kernel, str(table_path()))))
