#!/usr/bin/env bash
# Runs on the GPU machine, from the repo root, with .devcarry/ carried (bench/engine/device-pack.sh made it):
# records what the machine offers for onnxruntime's CUDA provider, installs a provider library found there
# beside the carried onnxruntime-node binding, and runs bench/engine/device-check.ts (CUDA vs CPU outputs,
# tokens/s). onnxruntime-node downloads that library from nuget at install time, which an offline machine
# cannot do, and it is too large to carry (hundreds of MB with the CUDA 12 math libraries it links to).
# Exit 4: no CUDA provider library on the machine; 3: the provider did not load (the error says why).
set -u
C=${C:-.devcarry}
W=/tmp/fgsn-device
mkdir -p "$W" && tar -xJf "$C/app.tar.xz" -C "$W" && tar -xJf "$C/testbed.tar.xz" -C "$W" || exit 2
echo "== machine"; nvidia-smi -L; nvidia-smi --query-gpu=driver_version --format=csv,noheader; uname -r
NODE=$(command -v node || true)
if [ -z "$NODE" ] || [ "$("$NODE" -p 'process.versions.node.split(".")[0]')" -lt 20 ]; then
  xz -dc "$C/node.xz" > "$W/node" && chmod +x "$W/node" && NODE=$W/node
fi
echo "== node: $NODE $("$NODE" --version)"
echo "== python onnxruntime"; python3 -c 'import onnxruntime as o; print(o.__version__, o.get_available_providers(), o.__file__)' 2>&1 | tail -1
echo "== onnxruntime provider libraries on the machine"
PROVS=$(timeout 120 find / -xdev \( -path /proc -o -path /sys -o -path "$W" \) -prune -o -name 'libonnxruntime_providers_cuda.so*' -print 2>/dev/null)
echo "${PROVS:-none}"
echo "== CUDA math libraries"
CUDALIBS=$(timeout 60 find / -xdev \( -path /proc -o -path /sys \) -prune -o \( -name 'libcublas*.so.*' -o -name 'libcudnn*.so.*' -o -name 'libcufft.so.*' -o -name 'libcudart.so.*' -o -name 'libcurand.so.*' \) -print 2>/dev/null | sort)
echo "$CUDALIBS" | grep -E '/lib(cublas|cudart|cudnn|cufft)\.so\.' | head -20
BIN=$W/app/node_modules/onnxruntime-node/bin/napi-v6/linux/x64
PROV=$(echo "$PROVS" | grep -m1 . || true)
if [ -z "$PROV" ]; then
  echo "== the error a user gets on this machine (no provider library installed)"
  FGSN_TESTBED_DIR=$W/testbed "$NODE" "$W/app/device-check.mjs" "$W/testbed/aligned" --prompts 8 --skip-synthetic
  echo "NO_CUDA_PROVIDER_LIBRARY (exit of the check: $?)"; exit 4
fi
cp "$PROV" "$BIN/libonnxruntime_providers_cuda.so"
cp "$(dirname "$PROV")/libonnxruntime_providers_shared.so" "$BIN/" 2>/dev/null || true
# The provider links to the CUDA runtime libraries by soname: put every folder that holds one on the path.
LIBDIRS=$(echo "$CUDALIBS" | grep . | xargs -r -n1 dirname | sort -u | paste -sd:)
export LD_LIBRARY_PATH=$LIBDIRS${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
echo "== unresolved libraries of the provider"; ldd "$BIN/libonnxruntime_providers_cuda.so" | grep 'not found' || echo none
FGSN_TESTBED_DIR=$W/testbed "$NODE" "$W/app/device-check.mjs" "$W/testbed/aligned" "$@"
