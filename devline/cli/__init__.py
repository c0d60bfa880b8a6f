"""The `devline` command line."""
