"""pielab's Python API: reading sweep folders (:mod:`.reading`) and launching sweeps and runs (:mod:`.launching`).

``pielab.load_sweep``, ``pielab.run_sweep``, ``pielab.resume_sweep`` and ``pielab.train`` are the public names
(``pielab/__init__.py``); this package holds them. The reading part imports neither Ray nor Optuna.
"""
