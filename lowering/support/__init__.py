"""Helpers shared by several lowering passes (pattern matching over the reference graph)."""
