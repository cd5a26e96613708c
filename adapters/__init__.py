"""Built-in adapters (imported as ``nnvtv.adapters``): one module per model family.

Importing this package registers every built-in table with :mod:`nnvtv.adapter` and every
shipped model with :mod:`nnvtv.catalog`.
"""

from nnvtv.adapters import hf_causal_lm, hf_seggpt, hf_vit, mae_vqgan, smollm2  # noqa: F401
from nnvtv.adapters.toy import catalog  # noqa: F401
from nnvtv.adapters.toy import seggpt as _toy_seggpt  # noqa: F401
