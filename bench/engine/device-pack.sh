#!/usr/bin/env bash
# Packs what bench/engine/device-run.sh needs on an offline GPU machine (no network, maybe no Node.js) that
# accepts at most ~64 MiB of carried files per call, into .devcarry/ (git-ignored):
#   payload (one tar, split into parts of PART_MIB MiB, default 60):
#     provider.tgz   the pinned CUDA 13 provider package (npm pack: npm's registry or cache; ~180 MB)
#     node.xz        this Node.js binary
#     app.tar.xz     device-check.ts bundled into one file with the native packages it loads (onnxruntime-node
#                    1.29 for linux-x64, tokenizers)
#     testbed.tar.xz the dev testbed's aligned, base and ft_sst_p10 models, the probe files and the recorded
#                    generations of aligned
#     SHA256SUMS
#   .devcarry/part.NN        the parts, one per device call
#   .devcarry/payload.sha256 the joined payload's checksum (carried with every part)
#   .devcarry/calls.md       the exact sequence of device `run` calls
#   bash bench/engine/device-pack.sh [testbed-dir]
set -euo pipefail
cd "$(dirname "$0")/../.."
TESTBED=${1:-${FGSN_TESTBED_DIR:-../shared/testbed/dev}}
PART_MIB=${PART_MIB:-60}
C=.devcarry
STAGE=$(mktemp -d)
trap 'rm -rf "$STAGE"' EXIT
rm -rf "$C"
mkdir -p "$C"
git check-ignore -q "$C/part.00" || { echo ".devcarry/ must be git-ignored (.gitignore): the device tool carries only ignored paths"; exit 1; }
P=$STAGE/payload
mkdir -p "$P"

# The provider package gpu:setup would install for this onnxruntime-node (scripts/gpu-setup.mjs holds the pin).
SPEC=$(node -e "import('./scripts/gpu-setup.mjs').then((m) => { const v = require('./node_modules/onnxruntime-node/package.json').version; const s = m.PROVIDER_PACKAGES[v]; if (!s) { console.error('no provider package for onnxruntime-node ' + v); process.exit(1); } console.log(s.name + '@' + s.version); })")
echo "== $SPEC"
npm pack "$SPEC" --pack-destination "$STAGE" --prefer-offline --silent >/dev/null
mv "$STAGE"/*.tgz "$P/provider.tgz"

xz -9 -T0 -c "$(command -v node)" > "$P/node.xz"

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
rm -f "$APP/$ORT/bin/napi-v6/linux/x64/libonnxruntime_providers_"*
cp -r node_modules/onnxruntime-common "$APP/node_modules/"
mkdir -p "$APP/node_modules/tokenizers"
cp node_modules/tokenizers/{package.json,index.js,tokenizers.linux-x64-gnu.node} "$APP/node_modules/tokenizers/"
tar -C "$STAGE" -cJf "$P/app.tar.xz" app

T=$STAGE/testbed
mkdir -p "$T/eval" "$T/data"
cp -r "$TESTBED/aligned" "$TESTBED/base" "$TESTBED/ft_sst_p10" "$T/"
cp "$TESTBED/eval/aligned.generations.jsonl" "$T/eval/"
cp "$TESTBED/data/"{harmful_attack_pool,lookalike_train,sst_train}.jsonl "$T/data/"
tar -C "$STAGE" -cJf "$P/testbed.tar.xz" testbed

(cd "$P" && sha256sum provider.tgz node.xz app.tar.xz testbed.tar.xz > SHA256SUMS)
tar -C "$STAGE" -cf "$STAGE/payload.tar" payload
(cd "$STAGE" && sha256sum payload.tar) > "$C/payload.sha256"
split -b "${PART_MIB}M" -d -a 2 "$STAGE/payload.tar" "$C/part."
N=$(find "$C" -name 'part.*' | wc -l)
ls -l "$P" "$C" | sed 's/^/   /'

{
  echo "# Device calls for this pack ($N parts of at most $PART_MIB MiB; run them back to back: the machine keeps"
  echo "# /tmp/fgsn-device only while it is warm). Each call: the run tool with carry and command as below."
  for i in $(seq 0 $((N - 1))); do
    part=$(printf 'part.%02d' "$i")
    echo "call $((i + 1)): carry [\".devcarry/$part\", \".devcarry/payload.sha256\"]  command: bash bench/engine/device-run.sh stage $i $N"
  done
  echo "The last call joins the parts, verifies them, installs the provider with scripts/gpu-setup.mjs --from, and runs"
  echo "the check (timeout_s 540); its results come back in \$OUT/device-check.jsonl and \$OUT/device-run.log."
  echo "Rerun the check alone while the machine is warm: command: bash bench/engine/device-run.sh check [device-check args]"
} > "$C/calls.md"
cat "$C/calls.md"
