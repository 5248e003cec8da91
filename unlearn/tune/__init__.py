"""Tuning a method's settings (tune_method.py, run.py --tune): search, grid lookup, command line."""
