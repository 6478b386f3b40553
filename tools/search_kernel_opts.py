"""BEAM-search the seed training step's slowest CPU kernels into tinystory/kernel_opts.json, the table that
tinystory/kernel_opts.py applies at run time (why a table, and what it holds: that module's docstring;
docs/performance.md, "Searched kernels"). Run on a quiet machine, from the repository (minutes per kernel):

  python tools/search_kernel_opts.py --top 40 --beam 4            # rewrites tinystory/kernel_opts.json
  python tools/search_kernel_opts.py --out my.json                # a table of one's own: TINYSTORY_KERNEL_OPTS=my.json
  python tools/search_kernel_opts.py --beam 0 --also A.json --also B.json   # no search: the faster of two tables' opts

BEAM picks by timings, so a search on a loaded machine can miss opts an earlier search found: `--also TABLE` times
that table's opts for each kernel too, and the fastest of the heuristics', BEAM's and the tables' is kept.

A tool, not part of the package: it drives the package's training step (bench.train_driver), which the run-time
table is applied inside of."""
import argparse, json, os, sys, time
from unittest import mock
from pathlib import Path
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # this checkout's package: the keys are its kernels'
from tinystory import kernel_opts, write_atomic
from tinystory.config import SEED_MODEL
from tinystory.bench import device_name, kernel_times, train_driver
from tinystory.device import TINYGRAD, patched
from tinystory.log import log, log_to_console

def step_kernels(cfg: dict, batch_size: int) -> tuple[dict, dict]:
  """The seed step's kernels as compiled with tinygrad's heuristics: name -> (ast, renderer, opts), and name -> ms
  in one replayed forward + backward (both cores)."""
  import tinygrad.codegen as codegen
  from tinygrad.helpers import ansistrip
  seen, heuristic = {}, kernel_opts.tinygrad_apply_opts()
  def record(ast, ren, beam=0):
    out = heuristic(ast, ren, beam)
    if ast.tag is None and out.arg is not None: seen.setdefault(ansistrip(out.arg.name), (ast, ren, out.arg.applied_opts))
    return out
  # the heuristics' kernels are wanted (TrainSteps would apply the table), each compiled here, where record sees it
  with mock.patch.dict(os.environ, TINYSTORY_KERNEL_OPTS="0"), patched({"PARALLEL": 0}, ((codegen, "apply_opts", record),)):
    steps, batch = train_driver(cfg, batch_size)
    with steps:
      for _ in range(4): steps.micro_step(*batch()), steps.update(1e-4)
      ms = {name: k["ms"] for name, k in kernel_times(steps, batch).items()}
  return seen, ms

def time_kernel(k, runs: int = 7) -> float:
  """Seconds for one call of k's kernel on one core (tinygrad's BEAM timer), the fastest of `runs`."""
  from tinygrad.codegen.opt import search
  _, compiled = search._try_compile((0, k))
  rawbufs, var_vals = args(k.ast, k.ren)
  return min(search._time_program(compiled[0], var_vals, [b.ensure_allocated() for b in rawbufs], cnt=runs))

def search(top: int, beam: int, out: Path, also: list[Path] = ()) -> None:
  """BEAM-search the `top` slowest kernels of the seed step (one core each, THREAD left to `thread`; beam 0: no
  search), time the opts the `also` tables hold for them, and write the fastest opts of each kernel that they make at
  least 5% faster than the heuristics to `out`."""
  from tinygrad.codegen.opt import KernelOptError, OptOps, search as tg_search
  cfg, batch_size = dict(SEED_MODEL), 64
  seen, ms = step_kernels(cfg, batch_size)
  tables = {path.name: kernel_opts.load_table(path.resolve())[0] for path in also}
  kernels, actions = [], [a for a in tg_search.actions if a.op is not OptOps.THREAD]  # one core per candidate: see thread
  with patched({"PARALLEL": 0}, ((tg_search, "actions", actions),)):  # each candidate compiled here, as the step's kernels
    for name, step_ms in sorted(ms.items(), key=lambda kv: -kv[1])[:top]:
      ast, ren, heuristic = seen[name]
      key, t = kernel_opts.kernel_key(ast), time.perf_counter()
      tried = {"heuristics": [(o.op.name, o.axis, o.arg) for o in heuristic if o.op is not OptOps.THREAD]}
      if beam:
        found = tg_search.beam_search(kernel_opts.scheduler(ast, ren, []), *args(ast, ren), beam, disable_cache=True)
        tried["beam"] = [(o.op.name, o.axis, o.arg) for o in found.applied_opts]
      tried |= {source: table[key] for source, table in tables.items() if key in table}
      times = {}
      for source, opts in tried.items():
        try: times[source] = time_kernel(kernel_opts.scheduler(ast, ren, opts))
        except KernelOptError: pass  # a table's opts that do not fit this kernel
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

def args(ast, ren) -> tuple[list, dict]:
  from tinygrad.codegen.opt.postrange import args_from_ast
  return args_from_ast(ast, ren.target.device)

if __name__ == "__main__":
  p = argparse.ArgumentParser(description="BEAM-search the seed training step's slowest CPU kernels into kernel_opts.json")
  p.add_argument("--top", type=int, default=40, help="how many of the slowest kernels to search")
  p.add_argument("--beam", type=int, default=4, help="BEAM width (0: no search, only the --also tables' opts)")
  p.add_argument("--also", type=Path, action="append", default=[], help="a table whose opts are timed too (repeatable)")
  p.add_argument("--out", type=Path, default=kernel_opts.TABLE)
  a = p.parse_args()
  log_to_console()
  search(a.top, a.beam, a.out, a.also)
