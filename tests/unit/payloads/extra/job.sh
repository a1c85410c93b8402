# shellcheck shell=bash
# a file whose name clashes with the run directory's job script
