"""Helpers that several passes share: fast qparam arithmetic (qparams) and root-attribute handling (root_attributes)."""
