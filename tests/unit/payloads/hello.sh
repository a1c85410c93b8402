# shellcheck shell=bash
echo "bash says $1 from $(basename "$PWD" | cut -c1-1)x"
