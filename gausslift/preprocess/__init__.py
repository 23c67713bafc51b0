"""Preprocessing real captures: ``gausslift ingest`` (see :mod:`gausslift.preprocess.ingest`)."""
