"""The numpy core: grids and geometry conventions, image I/O, metrics, phantoms, where pairs come from."""
