#!/usr/bin/env bash
# Runs on the GPU machine from the repo root, one call per part that bench/engine/device-pack.sh made:
#   bash bench/engine/device-run.sh stage <i> <n> [device-check args]   with .devcarry/part.<i> carried
# stores the part in /tmp/fgsn-device (kept while the machine stays warm); once all n parts are there it joins
# and verifies them, unpacks Node, the bundled check and the testbed, installs the CUDA provider package with
# scripts/gpu-setup.mjs --from (version check included) beside the carried onnxruntime-node, records what the
# machine offers, and runs the check. `check [args]` reruns the check alone on an unpacked payload.
# Results: $OUT/device-check.jsonl (one JSON line per result) and $OUT/device-run.log.
# Exit: 0 check passed; 5 a check failed; 3 the CUDA provider did not load; 2 missing/corrupt payload.
set -u
W=/tmp/fgsn-device
OUTDIR=${OUT:-$W/out}
mkdir -p "$W" "$OUTDIR"
LOG=$OUTDIR/device-run.log
MODE=${1:-}
shift || true

stage() {
  local i=$1 n=$2 part
  part=$(printf 'part.%02d' "$i")
  [ -f ".devcarry/$part" ] || { echo "no .devcarry/$part carried"; exit 2; }
  mkdir -p "$W/parts"
  cp ".devcarry/$part" "$W/parts/$part" && cp .devcarry/payload.sha256 "$W/payload.sha256" || exit 2
  local have
  have=$(find "$W/parts" -name 'part.*' | wc -l)
  echo "== stored $part ($have of $n parts on the machine)"
  [ "$have" -ge "$n" ] || exit 0
  cat "$W"/parts/part.* > "$W/payload.tar" && (cd "$W" && sha256sum -c payload.sha256) || { echo "joined payload is corrupt"; exit 2; }
  rm -rf "$W/payload" "$W/app" "$W/testbed" && tar -xf "$W/payload.tar" -C "$W" && (cd "$W/payload" && sha256sum -c SHA256SUMS) || exit 2
  rm -rf "$W/parts" "$W/payload.tar"
  tar -xJf "$W/payload/app.tar.xz" -C "$W" && tar -xJf "$W/payload/testbed.tar.xz" -C "$W" || exit 2
  xz -dc "$W/payload/node.xz" > "$W/node" && chmod +x "$W/node" || exit 2
}

check() {
  NODE=$(command -v node || true)
  if [ -z "$NODE" ] || [ "$("$NODE" -p 'process.versions.node.split(".")[0]')" -lt 20 ]; then NODE=$W/node; fi
  [ -x "$NODE" ] && [ -f "$W/app/device-check.mjs" ] || { echo "payload not unpacked: run the stage calls first"; exit 2; }
  echo "== machine"; nvidia-smi -L; nvidia-smi --query-gpu=driver_version,memory.total --format=csv,noheader; uname -r
  echo "== node: $NODE $("$NODE" --version)"
  ORT=$W/app/node_modules/onnxruntime-node
  echo "== npm run gpu:setup (from the carried package)"
  "$NODE" scripts/gpu-setup.mjs --from "$W/payload/provider.tgz" --ort-dir "$ORT" || exit 3
  echo "== CUDA libraries on the machine"
  CUDALIBS=$(timeout 60 find / -xdev \( -path /proc -o -path /sys -o -path "$W" \) -prune -o \( -name 'libcublas*.so.*' -o -name 'libcudnn*.so.*' -o -name 'libcudart.so.*' -o -name 'libcurand.so.*' \) -print 2>/dev/null | sort)
  echo "$CUDALIBS" | grep -E '/lib(cublasLt|cudart|cudnn|curand)\.so\.' | head -20
  # The provider links to the CUDA 13 libraries by soname: put every folder that holds one on the path.
  LIBDIRS=$(echo "$CUDALIBS" | grep . | xargs -r -n1 dirname | sort -u | paste -sd:)
  export LD_LIBRARY_PATH=$LIBDIRS${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
  echo "== unresolved libraries of the provider"; ldd "$ORT/bin/napi-v6/linux/x64/libonnxruntime_providers_cuda.so" | grep 'not found' || echo none
  rm -f "$OUTDIR/device-check.jsonl"
  FGSN_TESTBED_DIR=$W/testbed "$NODE" "$W/app/device-check.mjs" "$W/testbed/aligned" --out "$OUTDIR/device-check.jsonl" "$@"
}

case "$MODE" in
  stage)
    [ $# -ge 2 ] || { echo "usage: device-run.sh stage <i> <n> [device-check args]"; exit 2; }
    i=$1 n=$2
    shift 2
    stage "$i" "$n" 2>&1 | tee -a "$LOG"
    rc=${PIPESTATUS[0]}
    [ "$rc" -eq 0 ] || exit "$rc"
    [ -x "$W/node" ] && [ ! -d "$W/parts" ] || exit 0
    check "$@" 2>&1 | tee -a "$LOG"
    exit "${PIPESTATUS[0]}"
    ;;
  check)
    check "$@" 2>&1 | tee -a "$LOG"
    exit "${PIPESTATUS[0]}"
    ;;
  *)
    echo "usage: device-run.sh stage <i> <n> [device-check args] | check [device-check args]"
    exit 2
    ;;
esac
