"""Fingerprinting networks, one module per family, chosen by name from a registry
(:mod:`fplib.models.registry`):

============  ==========================================================  =======  =====================
family        module                                                       kind     variants
============  ==========================================================  =======  =====================
NAFP          :mod:`fplib.models.nafp` (Chang et al., ICASSP 2021)          float    ``nafp``, ``nafp_small``
ATTN          :mod:`fplib.models.attn` (Singh et al., ISMIR 2022)           float    ``attn``, ``attn_small``
============  ==========================================================  =======  =====================

``float`` fingerprints are unit vectors compared by inner product; ``binary`` ones are bit codes
compared by Hamming distance (:mod:`fplib.codes`). A new family is one module that registers its
variants; nothing else in fplib has to change.
"""

from fplib.models.attn import ATTN, ATTNSettings  # noqa: F401
from fplib.models.nafp import NAFP, NAFP_CHANNELS, DivideAndEncode, NAFPSettings  # noqa: F401
from fplib.models.registry import (  # noqa: F401  (this package's interface)
    KINDS,
    Variant,
    build_model,
    frontend_for,
    kind_of,
    kind_of_model,
    model_names,
    n_parameters,
    register,
    unregister,
    variant,
)
