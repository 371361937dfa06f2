#!/usr/bin/env bash
# Packs what bench/engine/device-run.sh needs on a GPU machine that has no network and maybe no Node.js into
# .devcarry/ (git-ignored; carry it with the device tool): a Node.js binary, device-check.ts bundled into one
# file with the few native packages it loads (onnxruntime-node for linux-x64, tokenizers), and the dev
# aligned model with its recorded generations. About 55 MB.
#   bash bench/engine/device-pack.sh [testbed-dir]
set -euo pipefail
cd "$(dirname "$0")/../.."
TESTBED=${1:-${FGSN_TESTBED_DIR:-../shared/testbed/dev}}
C=.devcarry
STAGE=$(mktemp -d)
trap 'rm -rf "$STAGE"' EXIT
mkdir -p "$C"
grep -qx '/.devcarry/' .git/info/exclude 2>/dev/null || echo '/.devcarry/' >> .git/info/exclude

[ -f "$C/node.xz" ] || xz -9e -T0 -c "$(command -v node)" > "$C/node.xz"

APP=$STAGE/app
mkdir -p "$APP/node_modules"
npx esbuild bench/engine/device-check.ts --bundle --platform=node --format=esm --target=node20 \
  --external:onnxruntime-node --external:tokenizers --log-level=warning \
  --banner:js="import { createRequire as __cr } from 'node:module'; const require = __cr(import.meta.url);" \
  --outfile="$APP/device-check.mjs"
ORT=node_modules/onnxruntime-node
mkdir -p "$APP/$ORT/bin/napi-v6/linux"
cp -r "$ORT/package.json" "$ORT/dist" "$APP/$ORT/"
cp -r "$ORT/bin/napi-v6/linux/x64" "$APP/$ORT/bin/napi-v6/linux/"
cp -r node_modules/onnxruntime-common "$APP/node_modules/"
mkdir -p "$APP/node_modules/tokenizers"
cp node_modules/tokenizers/{package.json,index.js,tokenizers.linux-x64-gnu.node} "$APP/node_modules/tokenizers/"
tar -C "$STAGE" -cJf "$C/app.tar.xz" app

mkdir -p "$STAGE/testbed/eval"
cp -r "$TESTBED/aligned" "$STAGE/testbed/"
cp "$TESTBED/eval/aligned.generations.jsonl" "$STAGE/testbed/eval/"
tar -C "$STAGE" -cJf "$C/testbed.tar.xz" testbed
cp bench/engine/device-run.sh "$C/"
du -sh "$C"/*
