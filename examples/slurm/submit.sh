#!/usr/bin/env bash
# Submit the array of parts, then the merge, which runs only if every part succeeded.
set -euo pipefail
HERE="$(cd "$(dirname "$0")" && pwd)"
array=$(sbatch --parsable "$HERE/generate.sbatch")
sbatch --dependency="afterok:${array}" "$HERE/merge.sbatch"
