"""napari-labelreg: weakly-supervised MR-to-TRUS registration (Hu et al. 2018).

The package imports neither Qt nor torch here; see :mod:`napari_labelreg.api`
for the scripting interface.
"""

__version__ = "0.1.0"
