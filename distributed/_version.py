"""The package version, in its own module so that any layer can read it
without importing the package root."""

#: Calendar versioning in dask's scheme (YEAR.MONTH.PATCH), so the pins of
#: packages built on distributed (``distributed>=2022.02.0`` in dask-jobqueue,
#: dask-kubernetes, dask-cloudprovider) accept this package instead of
#: replacing it with upstream's.
__version__ = "2026.12.0"
