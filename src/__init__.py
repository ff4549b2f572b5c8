"""dcvic: DC-VIC and the image tokenizers around it.

Every entry point (the scripts, the quickstart, the tests) imports this package before torch or
compressai, so the one warning below is filtered here, narrowly: torch_geometric, which compressai
imports, decorates functions with ``torch.jit.script`` at import time, and recent torch answers each
with a FutureWarning that no user of this project can act on. The same call from elsewhere
is filtered too; nothing in this project calls ``torch.jit.script``.
"""
import warnings

warnings.filterwarnings("ignore", message=r"`torch\.jit\.script` is deprecated", category=FutureWarning,
                        module=r"torch\.jit\._script")
