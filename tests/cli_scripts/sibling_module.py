"""Imported by report_env.py: the script's folder must be importable (sys.path[0])."""

VALUE = "sibling"
