# shellcheck shell=bash
echo started
sleep 300
