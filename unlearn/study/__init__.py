"""The reproduction study (studies/reproduction.py): plan and collect, report, command line."""
