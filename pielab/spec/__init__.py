"""What a sweep is, as given: the sweep spec (``sweeps/*.yaml``) and its search space (``search_spaces/*.yaml``),
loaded and validated before Ray starts. Ray-free; Optuna only for a space's distributions, imported where they
are built.

- :mod:`~pielab.spec.sweep_spec`: :class:`SweepSpec`, :func:`load_spec` (``--set`` overrides, the base config,
  finding the space);
- :mod:`~pielab.spec.fields`: the spec's sections and their types (pydantic), constraints;
- :mod:`~pielab.spec.checks`: the checks across keys, reported through :class:`pielab.yamlfile.Problems`;
- :mod:`~pielab.spec.space`: :class:`SearchSpace`, :func:`load_space`; :mod:`~pielab.spec.params`: its
  parameter types, a pydantic union discriminated on ``type``.
"""
