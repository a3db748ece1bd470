"""An image, end to end: file → calibrated image → sites → patches → SitePosterior.

- :mod:`~inference.image.io` — :func:`read_image` (DM3/DM4, EMD, TIFF, NPY/NPZ, netCDF) and
  :class:`Image`; what the file says about pixel size, beam energy and detector in
  :mod:`~inference.image.metadata`.
- :mod:`~inference.image.lattice` — columns found, the 2H lattice fitted;
  :mod:`~inference.image.sites` — sites, sublattices, flags, patches.
- :mod:`~inference.image.classify` — :func:`classify_image`: the image's context and every
  site's posterior; the neighbour pass in :mod:`~inference.image.neighbours`.
- :mod:`~inference.image.plot` — the map PNG.
"""
