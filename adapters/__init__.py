"""Built-in adapters (imported as ``nnvtv.adapters``): one module per model family.

Importing this package registers every built-in table with :mod:`nnvtv.adapter`.
"""

from nnvtv.adapters import hf_causal_lm, hf_vit  # noqa: F401
