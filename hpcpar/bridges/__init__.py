"""Bridges to other parallel libraries (joblib, dask.distributed), as ipyparallel has.

Each lives in its own module, imported only when its Client/View method is
called: neither hpcpar nor its engines import joblib or dask otherwise.
"""
