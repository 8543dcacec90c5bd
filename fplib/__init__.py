"""fplib: neural audio fingerprinting."""
