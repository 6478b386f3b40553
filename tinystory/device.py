"""The tinygrad device for `--device`, named as llama2.c/torch name it."""
from tinystory import UserError

def set_device(name: str) -> str:
  """Map a llama2.c/torch device name to tinygrad's and make it the default ('cpu' -> CPU, 'cuda:0' -> CUDA)."""
  from tinygrad import Device
  from tinygrad.helpers import DEV
  dev = {"cpu": "CPU", "mps": "METAL"}.get(name.lower(), name.split(":")[0].upper())
  try: Device[dev]
  except Exception as e: raise UserError(f"--device={name}: tinygrad cannot open {dev} here ({type(e).__name__}: {e})") from None
  DEV.value = dev
  return Device.DEFAULT
