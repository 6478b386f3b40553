"""BEAM-search the seed training step's slowest CPU kernels into tinystory/kernel_opts.json, the table that
tinystory/kernel_opts.py applies at run time (why a table, and what it holds: that module's docstring;
docs/performance.md, "Searched kernels"). Run on a quiet machine, from the repository (minutes per kernel):

  python tools/search_kernel_opts.py --top 60 --beam 0            # rewrites tinystory/kernel_opts.json (10 min)
  python tools/search_kernel_opts.py --out my.json                # a table of one's own: TINYSTORY_KERNEL_OPTS=my.json
  python tools/search_kernel_opts.py --beam 0 --also A.json --also B.json   # no search: the faster of two tables' opts

Each kernel is timed with the heuristics' opts; with no opts (one output per loop iteration: clang's loop vectorizer
then makes an elementwise kernel 16 floats wide, where the heuristics' upcast of 4 leaves it 4 wide); with register
tiles (tile_candidates: 16 outputs along one axis, a vector register, times 4 or 8 along another; then the fastest
widened); and, with --beam, with BEAM's search from the fastest of those. BEAM picks by timings, so a search on a
loaded machine can miss opts an earlier search found: `--also TABLE` times that table's opts for each kernel too, and
the fastest of all is kept.

A tool, not part of the package: it drives the package's training step (bench.train_driver), which the run-time
table is applied inside of."""
import argparse, contextlib, json, os, sys, time
from unittest import mock
from pathlib import Path
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # this checkout's package: the keys are its kernels'
from tinystory import kernel_opts, write_atomic
from tinystory.config import SEED_MODEL
from tinystory.bench import device_name, train_driver
from tinystory.device import TINYGRAD, choose_for, patched, using_device
from tinystory.log import log, log_to_console

def step_kernels(cfg: dict, batch_size: int) -> dict[str, list]:
  """The seed step's kernels as compiled with tinygrad's heuristics, by kernel key (kernels of one name can differ:
  a weight's gradient and another's of the same shape), each [ast, renderer, opts, name, ms in one replayed
  forward + backward (both cores), summed over its launches]."""
  import tinygrad.codegen as codegen, tinygrad.engine.realize as realize
  from tinygrad.helpers import ansistrip
  seen, optimized, heuristic, compile_kernel = {}, [], kernel_opts.tinygrad_apply_opts(), kernel_opts.tinygrad_compile_kernel()
  def record_opts(ast, ren, beam=0):  # the AST as apply_opts gets it (the table's key) and the heuristics' choice
    out = heuristic(ast, ren, beam)
    optimized.append((ast, ren))
    return out
  def record(task):  # the PROGRAM compiled from it (with PARALLEL=0 here, one kernel at a time, where this sees it)
    optimized.clear()
    i, program = compile_kernel(task)
    if optimized: seen[program.key] = optimized[-1]
    return i, program
  # the heuristics' kernels are wanted (TrainSteps would apply the table)
  kernels = {}
  hooks = ((realize, "_compile_kernel", record), (codegen, "apply_opts", record_opts))
  with mock.patch.dict(os.environ, TINYSTORY_KERNEL_OPTS="0"), patched({"PARALLEL": 0}, hooks):
    steps, batch = train_driver(cfg, batch_size, choose_for("CPU").grad_chunk)
    with steps:
      for _ in range(4): steps.micro_step(*batch()), steps.update(1e-4)
      steps.micro_step(*batch(), profile=(profile := []))
      for (name, _, s), program in zip(profile, steps.compiled()[0].replay.programs(), strict=True):
        if (found := seen.get(program.key)) is None: continue  # none of tinygrad's opts: not a kernel of an AST (a copy)
        ast, ren = found
        k = kernels.setdefault(kernel_opts.kernel_key(ast), [ast, ren, program.src[0].arg.applied_opts, ansistrip(name), 0.0])
        k[4] += s * 1e3
  return kernels

def time_kernel(k, runs: int = 7) -> float:
  """Seconds for one call of k's kernel on one core (tinygrad's BEAM timer), the fastest of `runs`."""
  from tinygrad.codegen.opt import search
  _, compiled = search._try_compile((0, k))
  if compiled is None: raise search.KernelOptError(f"{k.applied_opts} did not compile")  # tinygrad's search skips these too
  rawbufs, var_vals = args(k.ast, k.ren)
  return min(search._time_program(compiled[0], var_vals, [b.ensure_allocated() for b in rawbufs], cnt=runs))

def search(top: int, beam: int, out: Path, also: list[Path] = ()) -> None:
  """BEAM-search the `top` slowest kernels of the seed step (one core each, THREAD left to `thread`; beam 0: no
  search), time the opts the `also` tables hold for them, and write the fastest opts of each kernel that they make at
  least 5% faster than the heuristics to `out`."""
  cfg, batch_size = dict(SEED_MODEL), 64
  # on the CPU as training runs there (its DEV: device.settings_for), every kernel compiled here with the wide vectors
  # (kernel_opts.codegen_hooks, no table: tinygrad's heuristics where no opts are given)
  with using_device("cpu"), patched(attrs=kernel_opts.codegen_hooks({})): _search(cfg, batch_size, top, beam, out, also)

def _search(cfg: dict, batch_size: int, top: int, beam: int, out: Path, also: list[Path]) -> None:
  from tinygrad.codegen.opt import KernelOptError, OptOps, search as tg_search
  step = step_kernels(cfg, batch_size)
  tables = {path.name: kernel_opts.load_table(path.resolve())[0] for path in also}
  kernels, actions = [], [a for a in tg_search.actions if a.op is not OptOps.THREAD]  # one core per candidate: see thread
  with patched({"PARALLEL": 0}, ((tg_search, "actions", actions),)):  # each candidate compiled here, as the step's kernels
    for key, (ast, ren, heuristic, name, step_ms) in sorted(step.items(), key=lambda kv: -kv[1][4])[:top]:
      t = time.perf_counter()
      tried = {"heuristics": [(o.op.name, o.axis, o.arg) for o in heuristic if o.op is not OptOps.THREAD], "no opts": []}
      tried |= {source: table[key] for source, table in tables.items() if key in table}
      times = {}
      def timed(source, opts):
        try: times[source] = time_kernel(kernel_opts.scheduler(ast, ren, opts))
        except KernelOptError: pass  # a table's opts that do not fit this kernel
      for source, opts in tried.items(): timed(source, opts)
      if "heuristics" not in times:  # its opts without THREAD do not compile alone: nothing to compare with, no search
        log(f"{step_ms:7.1f} ms/step  {name:36s} skipped: the heuristics' opts do not time on one core"); continue
      plain, tile_times = kernel_opts.scheduler(ast, ren, []), {}
      def time_tiles(tiles):
        for opts in tiles:
          with contextlib.suppress(KernelOptError): tile_times[tuple(opts)] = time_kernel(kernel_opts.scheduler(ast, ren, opts), runs=3)
        return min(tile_times, key=tile_times.get) if tile_times else None
      if (tile := time_tiles(tile_candidates(plain))) is not None:
        tried["tiles"] = list(time_tiles(widen(plain, list(tile))))
        timed("tiles", tried["tiles"])
      if beam:  # BEAM from the fastest opts so far: it adds opts to them
        start = tried[min(times, key=times.get)]
        found = tg_search.beam_search(kernel_opts.scheduler(ast, ren, start), *args(ast, ren), beam, disable_cache=True)
        tried["beam"] = [(o.op.name, o.axis, o.arg) for o in found.applied_opts]
        timed("beam", tried["beam"])
      best = min(times, key=times.get)
      kept = times[best] < 0.95 * times["heuristics"]
      log(f"{step_ms:7.1f} ms/step  {name:36s} one core: " + ", ".join(f"{s} {v * 1e3:.2f} ms" for s, v in times.items()) +
          f" ({times['heuristics'] / times[best]:.2f}x: {best + ' kept' if kept else 'dropped'}; in {time.perf_counter() - t:.0f} s)")
      if kept: kernels.append({"key": key, "heuristic_name": name, "step_ms": round(step_ms, 1), "from": best,
                               "one_core_ms": [round(times["heuristics"] * 1e3, 3), round(times[best] * 1e3, 3)],
                               "opts": tried[best]})
  command = f"python tools/search_kernel_opts.py --top {top} --beam {beam}" + "".join(f" --also {p}" for p in also)
  doc = {"tinygrad": TINYGRAD, "searched": command, "machine": device_name("CPU"), "config": cfg, "batch_size": batch_size,
         "kernels": kernels}
  write_atomic(out, json.dumps(doc, indent=1) + "\n")
  log(f"{len(kernels)} of {top} kernels kept: {out}")

def tile_candidates(k) -> list[list]:
  """Register tiles for a kernel k (a Scheduler, no opts yet): 16 outputs along one axis (a vector register, where the
  kernel's loads and stores are in order along it: kernel_opts.wide_memory_coalescing), alone or times 4 or 8 along
  another. BEAM alone rarely reaches them: its upcasts are of 2-7, and a tile of 16 x 4 pays only once both are in
  place. widen() gives the next candidates from the fastest."""
  axes, shape = k.upcastable_dims, k.full_shape
  return [[("UPCAST", a, 16)] + tile for a in axes if shape[a] % 16 == 0
          for tile in [[]] + [[("UPCAST", b, n)] for b in axes if b != a for n in (4, 8) if shape[b] % n == 0]]

def widen(k, tile: list) -> list[list]:
  """From a tile (tile_candidates'): 32 along its vector axis (two registers), its reduction unrolled by 4, both."""
  (_, a, _), shape = tile[0], k.full_shape
  wider = [tile[:1] + [("UPCAST", a, 2)] + tile[1:]] if shape[a] % 32 == 0 else []
  unroll = k.unrollable_dims and shape[k.unrollable_dims[0]] % 4 == 0
  return wider + ([t + [("UNROLL", 0, 4)] for t in [tile, *wider]] if unroll else [])

def args(ast, ren) -> tuple[list, dict]:
  from tinygrad.codegen.opt.postrange import args_from_ast
  return args_from_ast(ast, ren.target.device)

if __name__ == "__main__":
  p = argparse.ArgumentParser(description="BEAM-search the seed training step's slowest CPU kernels into kernel_opts.json")
  p.add_argument("--top", type=int, default=60, help="how many of the slowest kernels to search")
  p.add_argument("--beam", type=int, default=0, help="BEAM width, searching from the fastest opts found (0: none)")
  p.add_argument("--also", type=Path, action="append", default=[], help="a table whose opts are timed too (repeatable)")
  p.add_argument("--out", type=Path, default=kernel_opts.TABLE)
  a = p.parse_args()
  log_to_console()
  search(a.top, a.beam, a.out, a.also)
