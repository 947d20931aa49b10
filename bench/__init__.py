"""Benchmarks: qfx's lift, codegen and convert against torch's, on three model families (python -m bench.run)."""
