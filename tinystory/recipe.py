"""Recipe files: a training recipe as TOML of `train`'s option names, the way llama2.c's and nanoGPT's users pass a
config file (`python train.py config/x.py --batch_size=32`), but data only: TOML is parsed, never executed.

  python cli.py train recipes/cpu-hour.toml --data=stories.txt    # options typed after the file override it

Precedence: train's defaults < the recipe < options typed on the command line. Each key must be one of train's
options with a value of that option's type (an integer may stand for a float); anything else is a one-line error that
names the file, the key and what was expected. No tinygrad here: the CLI imports this at its top.
"""
import hashlib, tomllib
from pathlib import Path
from tinystory import UserError

TOML_TYPES = {bool: "a boolean (true or false)", int: "an integer", float: "a number", str: "a string"}

def toml_type(v) -> str:
  """How TOML would name the type of a parsed value, for errors."""
  if isinstance(v, bool): return "a boolean"
  if isinstance(v, int): return "an integer"
  if isinstance(v, float): return "a float"
  if isinstance(v, str): return "a string"
  if isinstance(v, dict): return "a table"
  if isinstance(v, list): return "an array"
  return f"a {type(v).__name__}"  # dates and times

def option_value(path: str, key: str, v, kind: type):
  """`v` as a value of an option of type `kind`, or a UserError naming the file, the key and the type expected."""
  ok = isinstance(v, bool) if kind is bool else (isinstance(v, (int, float)) and not isinstance(v, bool) if kind is float
                                                   else isinstance(v, kind) and not isinstance(v, bool))
  if not ok: raise UserError(f"recipe {path}: {key} is {toml_type(v)}, expected {TOML_TYPES[kind]}")
  if isinstance(v, int) and not -2**63 <= v < 2**63: raise UserError(f"recipe {path}: {key} = {str(v)[:20]}... is out of range")
  return float(v) if kind is float else v

def load_recipe(path: str, config_fields) -> dict:
  """The recipe at `path` for a config dataclass's fields: {"path", "sha256", "options": {name: value}} (options in
  the file's order), every key and value checked."""
  try: raw = Path(path).read_bytes()
  except IsADirectoryError: raise UserError(f"recipe {path} is a directory, expected a .toml file") from None
  except OSError as e: raise UserError(f"cannot read recipe {path}: {e.strerror or e}") from None
  try: table = tomllib.loads(raw.decode("utf-8-sig"))  # a BOM, as some editors save it, is no error
  except UnicodeDecodeError as e: raise UserError(f"recipe {path} is not UTF-8 text (byte {e.start})") from None
  except tomllib.TOMLDecodeError as e: raise UserError(f"recipe {path} is not valid TOML: {e}") from None
  kinds = {f.name: f.type for f in config_fields}  # as cli.py types the options
  options = {}
  for key, v in table.items():
    if key == "overwrite":
      raise UserError(f"recipe {path}: overwrite deletes a run: it is not taken from a recipe; type --overwrite=True if you mean it")
    if key not in kinds:
      close = [k for k in kinds if k.replace("_", "") == key.replace("_", "").replace("-", "")]
      hint = f" (did you mean {close[0]}?)" if close else " (the keys are train's option names: python cli.py train --help)"
      raise UserError(f"recipe {path}: {key!r} is not an option of train{hint}")
    options[key] = option_value(path, key, v, kinds[key])
  return {"path": str(path), "sha256": hashlib.sha256(raw).hexdigest(), "options": options}

def apply_recipe(options: dict, recipe: dict | None, typed: list[tuple[str, object]]) -> list[tuple[str, object]]:
  """Put the recipe's values into `options` (a command's parsed options, changed in place) except those typed on the
  command line; returns the recipe's options that took effect, in the file's order, as (name, value) pairs."""
  if recipe is None: return []
  given = dict(typed)
  used = [(k, v) for k, v in recipe["options"].items() if k not in given]
  options.update(used)
  return used

def describe(recipe: dict) -> str:
  """The train.log line that names a recipe and every option in it, llama2.c's "Overriding config with" line."""
  opts = ", ".join(f"{k} = {v}" for k, v in recipe["options"].items())
  return f"Overriding config with {recipe['path']} ({len(recipe['options'])} options{': ' + opts if opts else ''})"
