"""Helpers that several passes share: `qparams` (qparams of many observers at once; insert-qdq, swap-modules),
`observers` (which modules are activation observers, asked once per class; insert-qdq, swap-modules) and
`root_attributes` (new root attributes named as torch's convert names them; insert-qdq, swap-modules,
cleanup)."""
