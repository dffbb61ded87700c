"""The method comparison on the embedded benchmark: a protocol that can tell the methods apart, its runs, and the
report built from their records (``docs/results.md``).

    python -m tcurseg.compare run headline --preset paper_zero_head   # one preset's table: its methods x seeds
    python -m tcurseg.compare run subjects                            # Dice vs training subjects
    python -m tcurseg.compare run ranks                               # Dice vs adapter size
    python -m tcurseg.compare run all                                 # every preset, then both curves
    python -m tcurseg.compare report                                  # docs/results.md from the records alone

The protocol, presets, grids and seeds are ``conf/compare/`` (docs/design.md, section 4). Modules: ``config``
(reads it), ``runs`` (launches ``python -m tcurseg.train`` and writes the records), ``records`` (the records and the
table they load into), ``select`` (the rates and ranks chosen on validation), ``stats`` (paired two-way bootstrap),
``tables`` (the numbers of a table), ``headline``, ``curves`` and ``answer`` (the report's sections), ``render``
(Markdown), ``report`` (the page). It needs pandas: ``pip install -e .[compare]``.
"""
