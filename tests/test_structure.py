"""The package's modules in layers (issue 22): every import of a tinystory module, at top level or inside a function,
points downward (the import graph has no cycle), no module of the package assigns another one's attribute (a choice
one module makes for another is a value handed to it), docs/architecture.md's module table lists exactly the imports
the code has, the modules cli.py imports at its top (config.py: every command's options) import no tinygrad,
tinygrad's private names are used only where tinygrad is wrapped, and its process-wide settings are changed only in
the adapter (device.py). Read from the source with ast, nothing imported; but for one behavioural test: the settings
a TrainSteps changes are put back after it."""
import ast, re
import pytest
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "tinystory"
TABLE = ROOT / "docs" / "architecture.md"

def modules() -> dict[str, Path]:
  """Module name (as the table names it: `model`, `__init__`; `cli` for cli.py) -> its file."""
  return {p.stem: p for p in sorted(PACKAGE.glob("*.py"))} | {"cli": ROOT / "cli.py"}

def imported(node: ast.AST, names: set[str]) -> list[tuple[str, str | None]]:
  """The tinystory modules an import statement imports, each with the local name it binds to that module (None where
  it binds none: `from tinystory.x import y`; `import tinystory.x` binds `tinystory`, the package)."""
  if isinstance(node, ast.Import):
    return [(a.name.split(".")[1], a.asname) if "." in a.name else ("__init__", a.asname or a.name)
            for a in node.names if a.name.split(".")[0] == "tinystory"]
  if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module and node.module.split(".")[0] == "tinystory":
    if node.module != "tinystory": return [(node.module.split(".")[1], None)]
    # `from tinystory import model, UserError`: a module where tinystory/NAME.py exists, else a name of __init__.py
    return [(a.name, a.asname or a.name) if a.name in names else ("__init__", None) for a in node.names]
  return []

def assigned(node: ast.AST) -> list[ast.expr]:
  """What a statement assigns or deletes (each of a tuple's targets), and the attribute a setattr / delattr names."""
  if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in ("setattr", "delattr") and len(node.args) > 1:
    return [ast.Attribute(value=node.args[0], attr=getattr(node.args[1], "value", "?"))]
  targets = (node.targets if isinstance(node, (ast.Assign, ast.Delete)) else
             [node.target] if isinstance(node, (ast.AugAssign, ast.AnnAssign)) else [])
  return [e for t in targets for e in (t.elts if isinstance(t, (ast.Tuple, ast.List)) else [t])]

def graph(sources: dict[str, str] | None = None) -> tuple[dict[str, set[str]], dict[str, list[str]]]:
  """(module -> the tinystory modules it imports, module -> its assignments to another tinystory module's attributes,
  as 'line N: module.NAME') of `sources` (module name -> source text), by default the package's and cli.py's."""
  sources = sources or {name: path.read_text(encoding="utf-8") for name, path in modules().items()}
  names, edges, writes = set(sources) - {"cli"}, {}, {}
  for name, text in sources.items():
    tree = ast.parse(text, name)
    imports = [m for node in ast.walk(tree) for m in imported(node, names)]
    edges[name] = {m for m, _ in imports} - {name}
    bound = {alias: m for m, alias in imports if alias is not None}  # local name -> the tinystory module it is
    if any(isinstance(n, ast.Import) and any(a.name.startswith("tinystory.") and not a.asname for a in n.names) for n in ast.walk(tree)):
      bound["tinystory"] = "__init__"
    def module_of(t: ast.expr) -> str | None:  # the tinystory module whose attribute t is: `model.X`, `tinystory.model.X`
      if not isinstance(t, ast.Attribute): return None
      if isinstance(v := t.value, ast.Name): return bound.get(v.id)
      if isinstance(v, ast.Attribute) and isinstance(v.value, ast.Name) and bound.get(v.value.id) == "__init__" and v.attr in names:
        return v.attr
      return None
    found = [f"line {node.lineno}: {m}.{t.attr}" for node in ast.walk(tree) for t in assigned(node) if (m := module_of(t)) not in (None, name)]
    if found: writes[name] = found
  return edges, writes

def cycle(edges: dict[str, set[str]]) -> list[str] | None:
  """A cycle of the graph as [a, b, ..., a], or None: depth first, a module met again while on the path closes one."""
  done: set[str] = set()
  def visit(m: str, path: list[str]) -> list[str] | None:
    path = path + [m]
    for n in sorted(edges.get(m, ())):
      if n in path: return path[path.index(n):] + [n]
      if n not in done and (found := visit(n, path)): return found
    done.add(m)
    return None
  return next((c for m in sorted(edges) if m not in done and (c := visit(m, [])) is not None), None)

def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
  """Cycles until none is left, each found with the closing edges of those before it taken out (so that every tangle
  is named, though cycles that share a closing edge are named once)."""
  edges, found = {m: set(ns) for m, ns in edges.items()}, []
  while c := cycle(edges):
    found.append(c)
    edges[c[-2]].discard(c[-1])
  return found

def table_rows() -> list[tuple[list[str], set[str]]]:
  """docs/architecture.md's module table: per row, its modules (the `.py` names of the first cell, without .py) and
  the modules its imports column names (backticked; `—` for none)."""
  text = TABLE.read_text(encoding="utf-8")
  section = text[text.index("## The modules"):]
  rows = []
  for line in section.splitlines()[4:]:  # the heading, a blank line, the header, the rule
    if not line.startswith("|"): break
    cells = [c.strip() for c in line.strip("|").split("|")]
    rows.append(([n[:-3] for n in re.findall(r"`([\w.]+)`", cells[0]) if n.endswith(".py")], set(re.findall(r"`(\w+)`", cells[-1]))))
  return rows

def test_the_checks_find_what_they_look_for():
  """Issue 22's findings, in small: device.py setting model's chunk while model.py imports device (also through
  `tinystory.model`, setattr and a function's import), and exchange.py and sample.py importing each other."""
  edges, writes = graph({"device": "from tinystory import model, UserError\nmodel.CHUNK = 0",
                         "model": "import tinystory.device\ndef f():\n  import tinystory.sample as s\n  setattr(s, 'X', 1)",
                         "sample": "from tinystory.exchange import load\ntinystory.model.Y = 2", "exchange": "import tinystory.sample",
                         "__init__": "", "cli": "import tinystory.model\ntinystory.model.Z += 1"})
  assert edges == {"device": {"model", "__init__"}, "model": {"device", "sample"}, "sample": {"exchange"},
                   "exchange": {"sample"}, "__init__": set(), "cli": {"model"}}
  assert writes == {"device": ["line 2: model.CHUNK"], "model": ["line 4: sample.X"], "cli": ["line 2: model.Z"]}
  assert cycles(edges) == [["model", "device", "model"], ["sample", "exchange", "sample"]]

def test_imports_point_downward_only():
  edges, _ = graph()
  assert not (found := cycles(edges)), "tinystory's imports have cycles:\n" + "\n".join(f"  {' -> '.join(c)}" for c in found)

def test_no_module_assigns_another_modules_attribute():
  _, writes = graph()
  assert not writes, "modules that set another module's attribute (hand the value over instead):\n" + \
    "\n".join(f"  {m}.py {w}" for m, ws in writes.items() for w in ws)

def test_the_architecture_tables_imports_are_the_codes():
  """Each row's imports column is the union of its modules' imports within the package (their imports of each other
  too: data.py's of synthetic.py), and every module of the package has one row. On a mismatch, each row that is wrong
  and how."""
  edges, _ = graph()
  rows, problems = table_rows(), []
  listed = [m for mods, _ in rows for m in mods]
  problems += [f"  {m}.py: no row in the table" for m in sorted(set(edges) - {"cli"} - set(listed))]
  problems += [f"  {m}.py: in the table, not in tinystory/" for m in listed if m not in edges]
  problems += [f"  {m}.py: in {listed.count(m)} rows" for m in sorted(set(listed)) if listed.count(m) > 1]
  for mods, says in rows:
    has = set().union(*(edges.get(m, set()) for m in mods))
    if says != has:
      problems.append(f"  {', '.join(m + '.py' for m in mods)}: the table lists {sorted(says) or '—'}, the code imports "
                      f"{sorted(has) or '—'}" + (f"; not in the table: {sorted(has - says)}" if has - says else "") +
                      (f"; not imported: {sorted(says - has)}" if says - has else ""))
  assert not problems, f"{TABLE.relative_to(ROOT)}'s module table and the code's imports disagree:\n" + "\n".join(problems)

# tinygrad's private names (`Tensor._seed`, `from tinygrad.dtype import _to_np_dtype`) change without notice between
# releases: they are used only in the modules that wrap tinygrad, behind its version pin
TINYGRAD_PRIVATE_OK = {"device", "replay", "kernel_opts"}

def private_uses(tree: ast.AST) -> list[str]:
  """`name._attr` (not a dunder, not on self or cls) and `from tinygrad... import _name` in a module's source."""
  out = []
  for node in ast.walk(tree):
    if isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] == "tinygrad":
      out += [f"line {node.lineno}: from {node.module} import {a.name}" for a in node.names if a.name.startswith("_")]
    elif (isinstance(node, ast.Attribute) and node.attr.startswith("_") and not node.attr.startswith("__") and
          not (isinstance(node.value, ast.Name) and node.value.id in ("self", "cls"))):
      out.append(f"line {node.lineno}: .{node.attr}")
  return out

def test_tinygrads_private_names_only_where_tinygrad_is_wrapped():
  found = {name: uses for name, path in modules().items() if name not in TINYGRAD_PRIVATE_OK
           if (uses := private_uses(ast.parse(path.read_text())))}
  assert not found, f"tinygrad's private names outside {sorted(TINYGRAD_PRIVATE_OK)}: {found}"
  assert private_uses(ast.parse("from tinygrad.dtype import _to_np_dtype\nTensor._seed\nself._x\nx.__dict__")) == [
    "line 1: from tinygrad.dtype import _to_np_dtype", "line 2: ._seed"]

# the modules cli.py imports at its top (config: every command's options): `--help` and the option checks load no
# tinygrad, neither in them nor in what they import, at their top or inside a function
NO_TINYGRAD = ("config", "recipe", "log")

def imports_tinygrad(tree: ast.AST) -> bool:
  return any(isinstance(n, ast.Import) and any(a.name.split(".")[0] == "tinygrad" for a in n.names) or
             isinstance(n, ast.ImportFrom) and n.level == 0 and (n.module or "").split(".")[0] == "tinygrad" for n in ast.walk(tree))

def tinygrad_chain(module: str, sources: dict[str, str] | None = None) -> list[str] | None:
  """The shortest chain of imports [module, ..., m] from `module` to a module m that imports tinygrad itself, or None."""
  sources = sources or {name: path.read_text(encoding="utf-8") for name, path in modules().items()}
  edges, _ = graph(sources)
  paths, seen = [[module]], {module}
  while paths:
    path = paths.pop(0)
    if imports_tinygrad(ast.parse(sources[path[-1]])): return path
    for n in sorted(edges.get(path[-1], ())):
      if n not in seen: seen.add(n); paths.append(path + [n])
  return None

def test_the_config_module_imports_no_tinygrad():
  found = {m: chain for m in NO_TINYGRAD if (chain := tinygrad_chain(m))}
  assert not found, "modules that must not import tinygrad do: " + "; ".join(" -> ".join(c + ["tinygrad"]) for c in found.values())
  # the check finds tinygrad imported directly and through a package module (there inside a function), not where it is not
  assert tinygrad_chain("config", {"config": "import tinygrad.helpers", "__init__": "", "cli": ""}) == ["config"]
  assert tinygrad_chain("config", {"config": "from tinystory import UserError\nfrom tinystory.model import X", "__init__": "",
                                   "model": "def f():\n  from tinygrad import Tensor", "cli": ""}) == ["config", "model"]
  assert tinygrad_chain("config", {"config": "from tinystory import UserError", "__init__": "import os", "cli": ""}) is None

# tinygrad's process-wide state (its ContextVars: LRU, ALLOW_TF32, DEV, PARALLEL; Device.DEFAULT; its modules'
# functions, the code generator's hooks; the environment it reads its settings from) changes for every later caller in
# the process: the package changes it in one place, the adapter, where each change is scoped or documented
TINYGRAD_STATE_OK = {"device"}

def tinygrad_writes(tree: ast.AST) -> list[str]:
  """Assignments (and setattr, delattr, del) to an attribute of a name bound by an import from tinygrad (`LRU.value`,
  `Device.DEFAULT`, `codegen.apply_opts`, `tinygrad.helpers.PARALLEL.value`), and writes to os.environ."""
  bound = {a.asname or a.name.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names
           if a.name.split(".")[0] == "tinygrad"}
  bound |= {a.asname or a.name for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and (n.module or "").split(".")[0] == "tinygrad"
            for a in n.names}
  def dotted(e: ast.expr) -> str:
    return dotted(e.value) + "." + e.attr if isinstance(e, ast.Attribute) else e.id if isinstance(e, ast.Name) else "?"
  def root(e: ast.expr) -> str: return root(e.value) if isinstance(e, (ast.Attribute, ast.Subscript)) else getattr(e, "id", "")
  out = []
  for node in ast.walk(tree):
    for t in assigned(node):
      if isinstance(t, ast.Attribute) and root(t) in bound: out.append((node.lineno, dotted(t)))
      elif isinstance(t, ast.Subscript) and dotted(t.value) in ("os.environ", "environ"): out.append((node.lineno, dotted(t.value) + "[...]"))
    if (isinstance(node, ast.Call) and isinstance(f := node.func, ast.Attribute) and
        (dotted(f.value) in ("os.environ", "environ") and f.attr in ("update", "setdefault", "pop", "popitem", "clear") or dotted(f) == "os.putenv")):
      out.append((node.lineno, dotted(f) + "()"))
  return [f"line {n}: {what}" for n, what in sorted(out)]

def test_tinygrads_process_wide_state_changes_only_in_the_adapter():
  sources = {**{name: path for name, path in modules().items()}, **{f"tools/{p.name}": p for p in sorted((ROOT / "tools").glob("*.py"))}}
  found = {name: ws for name, path in sources.items() if name not in TINYGRAD_STATE_OK if (ws := tinygrad_writes(ast.parse(path.read_text())))}
  assert not found, "tinygrad's process-wide state changed outside device.py (use device.patched):\n" + \
    "\n".join(f"  {m}: {w}" for m, ws in found.items() for w in ws)
  assert tinygrad_writes(ast.parse(
    "import os, tinygrad, tinygrad.codegen as codegen\nfrom tinygrad import Device\nfrom tinygrad.helpers import LRU as L, Context\n"
    "L.value = 0\nDevice.DEFAULT = 'CPU'\nsetattr(codegen, 'apply_opts', f)\ntinygrad.helpers.PARALLEL.value += 1\n"
    "os.environ['DEBUG'] = '2'\nos.environ.update(BEAM='2')\ndel codegen.x, y\n"
    "self.value = 1\narg.value = L.value\nwith Context(LRU=0): Device['CPU']\nenv = {**os.environ, 'DEV': 'NULL'}")) == [
    "line 4: L.value", "line 5: Device.DEFAULT", "line 6: codegen.apply_opts", "line 7: tinygrad.helpers.PARALLEL.value",
    "line 8: os.environ[...]", "line 9: os.environ.update()", "line 10: codegen.x"]

def test_tinygrads_settings_are_put_back_after_training_and_after_a_patched_block(monkeypatch):
  """What a TrainSteps changes in tinygrad while it is used (LRU off, the kernel table's hooks in the code generator
  and in what its compile workers run) is as it was after close() and after a `with` block; device.patched puts back
  what it changed, also on an error."""
  import numpy as np
  import tinygrad.codegen as codegen, tinygrad.engine.realize as realize, tinygrad.engine.worker as worker
  from tinygrad.helpers import LRU, PARALLEL
  from tinystory import kernel_opts
  from tinystory.device import patched
  from tinystory.config import ModelArgs, TrainConfig
  from tinystory.model import Transformer
  from tinystory.train import TrainSteps
  monkeypatch.setenv("TINYSTORY_KERNEL_OPTS", "1")
  monkeypatch.setattr(LRU, "value", 1)  # as in a fresh process (another test's TrainSteps may still be open)
  monkeypatch.delenv("BEAM_MAX_TASKS_PER_CHILD", raising=False)
  def state(): return LRU.value, PARALLEL.value, codegen.apply_opts, realize._compile_kernel, worker.getenv
  before = state()
  model = Transformer(ModelArgs(dim=16, n_layers=1, n_heads=2, n_kv_heads=2, vocab_size=40, max_seq_len=8), seed=0)
  cfg = TrainConfig(batch_size=2, max_seq_len=8, compile=False)
  steps = TrainSteps(model, cfg)
  assert LRU.value == 0 and codegen.apply_opts.func is kernel_opts.apply_opts and realize._compile_kernel.func is kernel_opts.compile_kernel
  assert worker.getenv("BEAM_MAX_TASKS_PER_CHILD", 16) == 1024 and worker.getenv("TINYSTORY_NO_SUCH_SETTING", 3) == 3
  steps.micro_step(*np.zeros((2, 2, 8), np.int64))
  steps.close()
  assert state() == before
  with TrainSteps(model, cfg) as steps: assert LRU.value == 0 and codegen.apply_opts.func is kernel_opts.apply_opts
  assert state() == before
  with pytest.raises(KeyboardInterrupt), patched({"LRU": 0, "PARALLEL": 0}, ((codegen, "apply_opts", None), (realize, "_compile_kernel", None),
                                                                            (worker, "getenv", None))):
    assert state() == (0, 0, None, None, None)
    raise KeyboardInterrupt
  assert state() == before
