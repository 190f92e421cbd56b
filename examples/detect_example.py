"""Placeholder until detection lands (issue 6)."""
import dbdetect

print("dbdetect", dbdetect.__version__)
