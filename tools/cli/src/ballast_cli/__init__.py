"""The `ballast` command line."""
