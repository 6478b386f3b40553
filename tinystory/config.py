"""Every command's options, as plain dataclasses whose fields carry their `--help` text (cli.py makes one click option
of each), with their checks; and the model's shape, `ModelArgs`, with the seed run's. No tinygrad here, nor anything
that imports it (tests/test_structure.py checks this): cli.py imports this module at its top, and `--help` stays fast."""
import math
from dataclasses import dataclass, field, fields
from pathlib import Path
from tinystory import UserError, need

def option(default, help: str):
  """A field of a command's config dataclass with its --help text: cli.py makes one option of each field."""
  return field(default=default, metadata={"help": help})

def need_positive(cfg, *names: str) -> None:
  for k in names: need(getattr(cfg, k) > 0, f"--{k} must be a positive integer, got {getattr(cfg, k)}")

MAX_VOCAB = 65535  # shards store token ids as uint16
SPLITS = ("train", "val", "all")  # of a prepared shard dir (pretok.split_shards)

# *** the model's shape ***

UNEMBEDDINGS = ("pinv", "tied", "untied", "pinv_scaled")

# The seed run's model (llama2.c's ModelArgs names; hidden_dim None: 341 by llama2.c's rule): train's defaults, bench's
# config and the PyTorch twin's (torch_llama.py).
SEED_MODEL = dict(dim=128, n_layers=4, n_heads=16, n_kv_heads=16, vocab_size=361, hidden_dim=None, multiple_of=1,
                  norm_eps=1e-5, max_seq_len=128, dropout=0.15, ffn_bias=True, unembedding="pinv")

def round_up(n: int, multiple: int) -> int: return -(-n // multiple) * multiple

@dataclass(repr=False)
class ModelArgs:
  # llama2.c's fields and defaults (its Llama 7B defaults)
  dim: int = 4096
  n_layers: int = 32
  n_heads: int = 32
  n_kv_heads: int | None = None
  vocab_size: int = 32000
  hidden_dim: int | None = None
  multiple_of: int = 256  # the derived FFN hidden size is rounded up to a multiple of this
  norm_eps: float = 1e-5
  max_seq_len: int = 2048
  dropout: float = 0.0
  # beyond llama2.c, defaulting to the seed run's model
  ffn_bias: bool = True      # bias on the SwiGLU gate w1
  unembedding: str = "pinv"  # logits = h @ pinv(E) ('pinv'), h @ E.T ('tied'), h @ output.weight.T ('untied'),
                             # exp(output.log_scale) * pinv_logit_scale * h @ pinv(E) ('pinv_scaled')

  def __post_init__(self): self.validate()

  def __repr__(self) -> str:
    # exactly llama2.c's dataclass repr (the exported log shows it), plus the extras that differ from their defaults
    fs = fields(self)
    shown = list(fs[:10]) + [f for f in fs[10:] if getattr(self, f.name) != f.default]
    return f"ModelArgs({', '.join(f'{f.name}={getattr(self, f.name)!r}' for f in shown)})"

  @property
  def kv_heads(self) -> int: return self.n_heads if self.n_kv_heads is None else self.n_kv_heads
  @property
  def head_dim(self) -> int: return self.dim // self.n_heads
  @property
  def hidden_size(self) -> int:
    """llama2.c's FFN hidden size: hidden_dim if given, else 2/3 of 4*dim rounded up to multiple_of (341 for the seed)."""
    if self.hidden_dim is not None: return self.hidden_dim
    return round_up(int(2 * (4 * self.dim) / 3), self.multiple_of)

  def validate(self) -> None:
    for name in ("dim", "n_layers", "n_heads", "n_kv_heads", "vocab_size", "hidden_dim", "multiple_of", "max_seq_len"):
      v = getattr(self, name)
      if v is None and name in ("n_kv_heads", "hidden_dim"): continue
      if not isinstance(v, int) or isinstance(v, bool) or v < 1: raise UserError(f"{name}={v!r}: expected a positive integer")
    if self.dim % self.n_heads: raise UserError(f"dim={self.dim} is not divisible by n_heads={self.n_heads}")
    if self.n_heads % self.kv_heads: raise UserError(f"n_heads={self.n_heads} is not a multiple of n_kv_heads={self.kv_heads}")
    if self.head_dim % 2:
      raise UserError(f"head dim dim/n_heads = {self.dim}/{self.n_heads} = {self.head_dim} is odd: rotary embeddings need it even")
    if self.vocab_size > MAX_VOCAB: raise UserError(f"vocab_size={self.vocab_size} is over {MAX_VOCAB:,} (tokens are uint16)")
    # a type first: a JSON null or string compared with a number would be Python's raw TypeError, not one line
    num = lambda v: isinstance(v, (int, float)) and not isinstance(v, bool)
    if not (num(self.norm_eps) and self.norm_eps > 0): raise UserError(f"norm_eps={self.norm_eps!r}: expected a positive number")
    if not (num(self.dropout) and 0 <= self.dropout < 1): raise UserError(f"dropout={self.dropout!r}: expected a number in [0, 1)")
    if not isinstance(self.ffn_bias, bool): raise UserError(f"ffn_bias={self.ffn_bias!r}: expected True or False")
    if self.unembedding not in UNEMBEDDINGS:
      raise UserError(f"unembedding={self.unembedding!r} is unknown: expected one of {', '.join(map(repr, UNEMBEDDINGS))}")

# TrainConfig's fields that are ModelArgs' (vocab_size 0: the tokenizer's), in ModelArgs' order, as config.json and
# ckpt.json record them; all but dropout fix the model's shape
MODEL_FIELDS = ("dim", "n_layers", "n_heads", "n_kv_heads", "vocab_size", "multiple_of", "max_seq_len", "dropout", "ffn_bias",
                "unembedding")
SHAPE_FIELDS = tuple(k for k in MODEL_FIELDS if k != "dropout")

def is_model_file(path: str) -> bool:
  """Whether `path` names a model made elsewhere (a .bin file, or a directory with config.json and model.safetensors:
  loader.load_model_file reads them) rather than a tinystory run or checkpoint: train's --init_from, sample's and
  eval's --checkpoint."""
  p = Path(path)
  return (p.is_file() and p.suffix == ".bin") or (p.is_dir() and (p / "config.json").is_file() and (p / "model.safetensors").is_file()
                                                  and not (p / "ckpt.json").is_file())

# *** train ***

@dataclass
class TrainConfig:
  """llama2.c's train.py options, its names and order, with the seed run's values as defaults; `--help` shows each
  field's help."""
  # I/O
  out_dir: str = option("out", "run directory (train.log, metrics.jsonl, config.json, tokenizer.tok, ckpt/), relative "
                        "to ./runs of the working directory unless absolute")
  eval_interval: int = option(5000, "evaluate (and checkpoint if the val loss improved) every this many iterations")
  log_interval: int = option(1, "print an iteration line every this many iterations")
  eval_iters: int = option(100, "batches of each split averaged for an eval's train and val loss")
  eval_only: bool = option(False, "exit right after the first eval")
  always_save_checkpoint: bool = option(False, "save a checkpoint at every eval, not only when the val loss improves")
  init_from: str = option("scratch", "'scratch': a new model; 'resume': continue <out_dir>/ckpt exactly (weights, "
                          "optimizer state, data position, RNG) with the run's saved options; options typed now change "
                          "them (logged as 'changed on resume'), except those that fix the model shape (dim, n_layers, "
                          "n_heads, n_kv_heads, multiple_of, vocab_size, ffn_bias, unembedding, max_seq_len), its data "
                          "(data, tokenizer, vocab_source) or its RNG (seed): other values of those are refused. A "
                          "model file (a llama2.c .bin or a Hugging Face directory, docs/exchange.md): a new run from "
                          "its shape and weights, and unless given its context length (a shorter --max_seq_len may be given) "
                          "and its own tokenizer (tokenizer.bin beside a .bin, an HF directory's tokenizer.json)")
  overwrite: bool = option(False, "a new run (not --init_from=resume) in a run dir that holds a checkpoint: delete that "
                           "run (checkpoint, train.log, metrics.jsonl, config.json) once every check has passed")
  # wandb logging (llama2.c's)
  wandb_log: bool = option(False, "log llama2.c's series (iter, tokens, loss/train, loss/val, lr, mfu) to Weights & "
                           "Biases at each eval; needs the wandb package (pip install wandb); WANDB_MODE=offline works "
                           "without a network")
  wandb_project: str = option("llamac", "the wandb project")
  wandb_run_name: str = option("", "the wandb run name; '': 'run' + the start time, as llama2.c")
  # data
  data: str = option("synthetic", "prepared shard dir, or raw sources (files, dirs, globs, 'synthetic'), comma-separated")
  tokenizer: str = option("char", "tokenizer file (.tok, llama2.c tokenizer.bin, exported tokenizer.json), or "
                          "'char'/'bpe' to fit one on --data on the fly; with --init_from=MODEL: the model's own")
  val_data: str = option("", "held-out text for the val loss, all of it (e.g. TinyStories-valid.txt): raw sources, "
                         "prepared with the run's tokenizer, or a prepared shard dir; '': --data's val shard. A resume "
                         "keeps the run's unless given")
  batch_size: int = option(64, "sequences per micro-batch (an iteration is gradient_accumulation_steps micro-batches)")
  max_seq_len: int = option(SEED_MODEL["max_seq_len"], "tokens per sequence: the model's context length")
  vocab_source: str = option("custom", "only 'custom' is accepted: a tokenizer fitted here (llama2.c's 'llama2', "
                             "Meta's tokenizer, cannot be downloaded by this project)")
  vocab_size: int = option(0, "0: the tokenizer's size; otherwise it must agree with the tokenizer (--tokenizer=bpe "
                           "fits one of this size)")
  # model (the seed's; ModelArgs names)
  dim: int = option(SEED_MODEL["dim"], "model width: the embedding and residual stream size")
  n_layers: int = option(SEED_MODEL["n_layers"], "transformer blocks")
  n_heads: int = option(SEED_MODEL["n_heads"], "attention heads; dim/n_heads (the head size) must be even, for RoPE")
  n_kv_heads: int = option(SEED_MODEL["n_kv_heads"], "key/value heads (grouped-query attention when fewer than "
                           "n_heads); n_heads must be a multiple of it")
  multiple_of: int = option(SEED_MODEL["multiple_of"], "the FFN hidden size, 2/3 of 4*dim, is rounded up to a multiple "
                            "of this")
  dropout: float = option(SEED_MODEL["dropout"], "dropout probability (embeddings, attention, residual branches), in "
                          "training only")
  ffn_bias: bool = option(SEED_MODEL["ffn_bias"], "a bias on the SwiGLU gate w1 (the seed's; stock llama2.c has none)")
  unembedding: str = option(SEED_MODEL["unembedding"], "pinv (the seed: logits = h @ pinv(E)) | tied (stock llama2.c) | "
                            "untied | pinv_scaled (beyond the seed: pinv's logits times a learned scale, starting at "
                            "tied's logit scale)")
  # adamw optimizer
  gradient_accumulation_steps: int = option(1, "micro-batches whose mean gradient makes one optimizer step")
  learning_rate: float = option(3e-4, "peak learning rate, reached after warmup_iters")
  max_iters: int = option(100000, "the last iteration (iterations run from 0 to max_iters, as llama2.c)")
  weight_decay: float = option(0.1, "AdamW weight decay of the 2+-dim tensors (not of biases and norm weights)")
  beta1: float = option(0.9, "AdamW's decay of the gradient's running mean")
  beta2: float = option(0.99, "AdamW's decay of the squared gradient's running mean")
  grad_clip: float = option(1.0, "clip gradients at this global norm; 0 disables")
  # learning rate schedule
  decay_lr: bool = option(True, "linear warmup, then cosine decay to min_lr (False: learning_rate throughout)")
  warmup_iters: int = option(2500, "iterations of linear warmup from 0 to learning_rate")
  lr_decay_iters: int = option(0, "iteration at which the cosine decay reaches min_lr; 0: max_iters")
  min_lr: float = option(0.0, "learning rate at the end of the decay and after it")
  # system
  device: str = option("cpu", "cpu, or a tinygrad device: cuda, metal, amd; several, comma-separated (cuda:0,cuda:1): "
                       "data parallel, each micro-batch split between them (docs/devices.md)")
  dtype: str = option("float32", "float32 | bfloat16 | float16: as llama2.c, the CPU trains in float32 whatever it "
                      "says; other devices take float32 only, for now")
  compile: bool = option(True, "TinyJit-compiled steps (False runs eagerly: same numbers, slower)")
  seed: int = option(1337, "seed of the model's init and of the dropout masks (a resume restores the checkpoint's RNG)")
  peak_flops: float = option(0.0, "peak FLOP/s for mfu; 0: 3e11 on cpu, 312e12 (A100 bf16, as llama2.c) elsewhere")

  def validate(self) -> None:
    need_positive(self, "eval_interval", "log_interval", "eval_iters", "batch_size", "max_seq_len", "gradient_accumulation_steps")
    for k in ("max_iters", "warmup_iters", "lr_decay_iters", "vocab_size"):
      need(getattr(self, k) >= 0, f"--{k} must be >= 0, got {getattr(self, k)}")
    for k in ("learning_rate", "min_lr", "weight_decay", "grad_clip"):
      need(getattr(self, k) >= 0 and math.isfinite(getattr(self, k)), f"--{k} must be a finite number >= 0, got {getattr(self, k)}")
    for k in ("beta1", "beta2"): need(0 <= getattr(self, k) < 1, f"--{k} must be in [0, 1), got {getattr(self, k)}")
    need(self.init_from in ("scratch", "resume") or is_model_file(self.init_from), f"--init_from must be 'scratch', 'resume' or "
         f"a model file (a llama2.c .bin or a Hugging Face directory, docs/exchange.md), got {self.init_from!r}")
    need(not (self.overwrite and self.init_from == "resume"), "--overwrite=True starts a new run: it does not go with --init_from=resume")
    need(self.vocab_source == "custom", f"--vocab_source={self.vocab_source!r} is not available: only 'custom' (a tokenizer "
         "fitted with `tokenizer fit` or on the fly); Meta's Llama 2 tokenizer cannot be downloaded by this project")
    need(self.dtype in ("float32", "bfloat16", "float16"), f"--dtype must be float32, bfloat16 or float16, got {self.dtype!r}")
    devices = len(self.device.split(","))
    need(self.batch_size % devices == 0, f"--batch_size={self.batch_size} must be a multiple of the {devices} devices of "
         f"--device={self.device}: each gets an equal shard of every micro-batch")
    need(self.min_lr <= self.learning_rate, f"--min_lr ({self.min_lr}) must not exceed --learning_rate ({self.learning_rate})")

  def model_args(self, vocab_size: int) -> dict:
    """The ModelArgs fields of these options, with the tokenizer's `vocab_size`."""
    return {k: vocab_size if k == "vocab_size" else getattr(self, k) for k in MODEL_FIELDS}

# *** sample ***

@dataclass
class SampleConfig:
  """llama2.c's sample.py options, in its order, and its defaults; `--help` shows each field's help."""
  checkpoint: str = option("", "run dir (runs/<name> or <name>), checkpoint dir, or a file in it; or a llama2.c .bin "
                           "or a Hugging Face directory (docs/exchange.md); default: the newest under runs/")
  start: str = option("", "prompt text, or FILE:path; '' starts from BOS alone")
  num_samples: int = option(1, "samples to draw, one after another, each from the prompt")
  max_new_tokens: int = option(100, "tokens generated per sample")
  temperature: float = option(1.0, "divides the logits before the softmax: lower is more predictable; 0: greedy (argmax)")
  top_k: int = option(300, "keep the k most likely tokens")
  top_p: float = option(1.0, "then the fewest most likely tokens whose probability reaches p (nucleus); 1: off")
  tokenizer: str = option("", "tokenizer file (.tok, or a llama2.c tokenizer.bin); default: the run's tokenizer.tok, "
                          "tokenizer.bin beside a .bin, a Hugging Face directory's tokenizer.json")
  seed: int = option(1337, "seed of the draws (numpy): the same seed and options give the same text")
  device: str = option("cpu", "cpu, or a tinygrad device: cuda, metal, amd")
  compile: bool = option(True, "TinyJit-compiled decoding (False runs eagerly: same numbers, slower)")
  slide: int = option(1, "tokens dropped at once when the context is full: 1 is llama2.c (the last max_seq_len tokens, "
                      "recomputed for every token); s > 1 recomputes once per s tokens (faster; not llama2.c's output)")

  def validate(self) -> None:
    need_positive(self, "num_samples", "max_new_tokens", "top_k", "slide")
    need(math.isfinite(self.temperature) and self.temperature >= 0,
         f"--temperature must be a finite number >= 0 (0: greedy), got {self.temperature}")
    need(0 < self.top_p <= 1, f"--top_p must be in (0, 1] (1 keeps every token), got {self.top_p}")

# *** eval ***

@dataclass
class EvalConfig:
  """`python cli.py eval`'s options; `--help` shows each field's help."""
  checkpoint: str = option("", "run dir (runs/<name> or <name>), checkpoint dir, or a file in it; '': the newest "
                           "under runs/")
  data: str = option("", "the text: story files, dirs, globs or 'synthetic[:N]', comma-separated, tokenized as training "
                     "does; or a prepared shard dir")
  split: str = option("", "of a prepared shard dir: val | train | all; '': val")
  tokenizer: str = option("", "tokenizer file (.tok, llama2.c tokenizer.bin, exported tokenizer.json); '': the run's "
                          "tokenizer.tok")
  max_windows: int = option(0, "evaluate the first N windows only; 0: every window, the whole text")
  batch_size: int = option(16, "windows per forward pass (the last batch is padded; the numbers do not depend on it)")
  device: str = option("cpu", "cpu, or a tinygrad device: cuda, metal, amd")
  compile: bool = option(True, "TinyJit-compiled forward (False runs eagerly: same numbers, slower)")

  def validate(self) -> None:
    """The options but --data, whose sources evaluate.run_eval reads (data.source_list)."""
    need(self.split in ("", *SPLITS), f"--split must be one of {', '.join(SPLITS)}, got {self.split!r}")
    need_positive(self, "batch_size")
    need(self.max_windows >= 0, f"--max_windows must be >= 0 (0: the whole text), got {self.max_windows}")
