#!/usr/bin/env bash
# Spec in the repo -> generate -> check the exit status and the summary -> verify -> train.
# Usage: examples/ci/ci.sh [OUT]   (default: out/ci). Needs `dalle-data` on PATH (make install, then .venv/bin).
set -uo pipefail
HERE="$(cd "$(dirname "$0")" && pwd)"
OUT="${1:-out/ci}"
PYTHON="${PYTHON:-python}"

mkdir -p "$(dirname "$OUT")"
dalle-data generate --config "$HERE/spec.yaml" --out "$OUT" --json > "$OUT.summary.json"
status=$?
case $status in
  0) echo "generate: complete" ;;
  3) echo "generate: the dataset is short (a quota was not met); failing the build" >&2; exit 3 ;;
  *) echo "generate failed with exit status $status" >&2; exit "$status" ;;
esac

# Gate on the summary (schema: docs/summary.schema.json): every class met its quota, acceptance not too low.
"$PYTHON" - "$OUT.summary.json" <<'PY' || exit 1
import json, sys
summary = json.load(open(sys.argv[1]))
assert summary["schema"] == "dalle-data/summary/v2", summary["schema"]
short = [name for name, row in summary["classes"].items() if not row["met"]]
assert not short, f"classes under quota: {short}"
assert summary["acceptance"] >= 0.5, f"acceptance {summary['acceptance']:.0%} is suspiciously low"
print(f"summary: {summary['kept']} kept of {summary['generated']} generated "
      f"({summary['acceptance']:.0%}), labels {summary['labels']}")
PY

dalle-data verify "$OUT" || exit 1
"$PYTHON" "$HERE/../train_classifier.py" "$OUT" --format parquet --epochs 1 || exit 1
