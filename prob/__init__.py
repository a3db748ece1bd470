"""ctxdefect's domain and probability layer: defect classes, Context, case grid,
class priors, metrics, datasets and netCDF IO. Depends only on numpy and xarray.
"""

from prob.classes import (
    CHALCOGEN_CLASSES,
    CLASSES,
    METAL_CLASSES,
    SITE_TYPES,
    ColumnAtoms,
    applies,
    classes_of,
    column_atoms,
    site_type_of,
)
from prob.context import DETECTORS, NONE, Context
from prob.datasets import KINDS, PRIORS, patch_set, site_posterior, template_bank
from prob.grid import Case, consistent_cases, grid_cases, select_cases
from prob.io import read_netcdf, write_netcdf
from prob.materials import HOSTS, Host, get_host
from prob.priors import PriorConfig, context_aware_prior, context_free_prior
from prob.provenance import library_version

__version__ = library_version("ctxdefect")

__all__ = [
    "CHALCOGEN_CLASSES",
    "CLASSES",
    "DETECTORS",
    "HOSTS",
    "KINDS",
    "METAL_CLASSES",
    "NONE",
    "PRIORS",
    "SITE_TYPES",
    "Case",
    "ColumnAtoms",
    "Context",
    "Host",
    "PriorConfig",
    "applies",
    "classes_of",
    "column_atoms",
    "consistent_cases",
    "context_aware_prior",
    "context_free_prior",
    "get_host",
    "grid_cases",
    "patch_set",
    "read_netcdf",
    "select_cases",
    "site_posterior",
    "site_type_of",
    "template_bank",
    "write_netcdf",
]
