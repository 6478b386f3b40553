"""Models leave for llama2.c and Hugging Face (`export-model`): docs/exchange.md. They come in from them through
loader.py (`load_model_file`); the formats themselves are in llama2c.py and hf.py."""
from pathlib import Path
import numpy as np
from tinygrad import Tensor
from tinystory import UserError
from tinystory.checkpoint import model_weights, resolve_checkpoint, run_of
from tinystory.files import write_dir
from tinystory.hf import tokenizer_json, write_hf
from tinystory.llama2c import check_exportable, write_llama2c
from tinystory.loader import load_model, load_tokenizer
from tinystory.model import uses_pinv

FORMATS = {"hf": None, "llama2c": 0, "llama2c-q8": 2}  # format -> llama2.c file version

def unembedding_weights(model) -> dict[str, np.ndarray]:
  """The model's weights (logical shapes, numpy) with output.weight = the (vocab, dim) unembedding when it is not the
  embedding: for 'pinv' the pseudo-inverse the model itself computes (its logits of the identity, as sampling does),
  pinv_scaled's with its scale multiplied in."""
  w = model_weights(model)
  if uses_pinv(model.args):
    w["output.weight"] = model.logits(Tensor.eye(model.args.dim)).numpy().T.copy()
    w.pop("output.log_scale", None)
  return w

def export_model(run: str, fmt: str, out: str) -> list[Path]:
  """Write the model of RUN (a run dir, checkpoint dir or run name) and its tokenizer in format `fmt` into dir `out`."""
  if fmt not in FORMATS: raise UserError(f"--format {fmt!r} is unknown: expected one of {', '.join(FORMATS)}")
  if not run: raise UserError("give the run to export (a run dir such as runs/out)")
  ck = resolve_checkpoint(run)
  model, _ = load_model(ck)
  tok_path = run_of(ck) / "tokenizer.tok"
  if not tok_path.is_file(): raise UserError(f"no tokenizer saved with the run (expected {tok_path})")
  tok = load_tokenizer(tok_path)
  out_dir = Path(out)
  if out_dir.exists() and not out_dir.is_dir(): raise UserError(f"--out {out} is a file: give a directory")
  if fmt != "hf":  # refused before the pseudo-inverse is computed and anything is written
    check_exportable(model.args, tok, FORMATS[fmt])
  else:
    tokenizer_json(tok)  # refuses a tokenizer.bin before anything is written
  weights = unembedding_weights(model)
  return write_dir(out_dir, "--out", lambda d: write_hf(weights, model.args, tok, d) if fmt == "hf" else
                   write_llama2c(weights, model.args, tok, d, FORMATS[fmt]))
