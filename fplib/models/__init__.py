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
compared by Hamming distance (:mod:`fplib.codes`). A new family is one module (its network and a
factory) plus its entries in :data:`fplib.models.registry.BUILTIN`; nothing else in fplib has to change.
Each name has one import path: the registry's functions from :mod:`fplib.models.registry`, a network
from its family's module. Importing this package or the registry does not import torch.
"""
