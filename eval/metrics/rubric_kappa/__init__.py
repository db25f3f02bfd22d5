"""Data files of the eval harness (a package so that installs ship them)."""
