"""fplib: neural audio fingerprinting."""

from fplib import runtime

runtime.configure_allocator()  # before torch allocates anything; see fplib/runtime.py
