"""tinystory: train tiny LLaMA-style story models from scratch on a CPU with tinygrad."""
__version__ = "0.1.0"

class UserError(Exception):
  """A mistake in the user's input (a file, an option, a value). The CLI prints it as one line and exits 1."""
