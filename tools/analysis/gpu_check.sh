#!/usr/bin/env bash
# Kept for old instructions: the GPU check is tools/analysis/gpu_check.py (see its docstring); arguments pass through.
cd "$(dirname "$0")/../.." && exec python tools/analysis/gpu_check.py "$@"
