"""Fingerprinting networks, one module per family, chosen by name from a registry
(:mod:`fplib.models.registry`):

======  ===========================================  ======  ======================================
family  module                                       kind    variants
======  ===========================================  ======  ======================================
NAFP    :mod:`fplib.models.nafp` (Chang 2021)        float   ``nafp``, ``nafp_small``
ATTN    :mod:`fplib.models.attn` (Singh 2022)        float   ``attn``, ``attn_small``
SAMAF   :mod:`fplib.models.samaf` (Báez-Suárez 2020)  binary  ``samaf``, ``samaf_small``, ``samaf_mfcc``
======  ===========================================  ======  ======================================

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
from fplib.models.samaf import SAMAF, SAMAFSettings  # noqa: F401
