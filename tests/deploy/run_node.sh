#!/bin/sh
# Runs validate.mjs with the arguments given; skips (77) with the reason when Node.js or the
# npm packages (scripts/setup.sh runs `npm ci` here) are missing.
dir=$(cd "$(dirname "$0")" && pwd)
command -v node >/dev/null 2>&1 || { echo "SKIP: node is not installed"; exit 77; }
[ -d "$dir/node_modules/kubernetes-models" ] && [ -d "$dir/node_modules/yaml" ] ||
  { echo "SKIP: npm packages missing in $dir (run scripts/setup.sh, or npm ci there)"; exit 77; }
exec node "$dir/validate.mjs" "$@"
