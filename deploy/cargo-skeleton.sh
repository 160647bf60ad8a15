#!/bin/sh
# Copies a cargo workspace's manifests (Cargo.toml, Cargo.lock) from SRC to
# DEST and gives every target file a stub body, so the Dockerfiles can build
# the dependencies in a layer that only changes when a manifest does.
# Stubs mirror which target files exist (src/lib.rs, src/main.rs, src/bin/,
# build.rs, benches/, tests/, examples/), so explicitly declared targets still
# find their files.
# Usage: cargo-skeleton.sh SRC DEST
set -eu
src=$1
dest=$2

cd "$src"
mkdir -p "$dest"
cp Cargo.lock "$dest/"
find . \( -name target -o -name .git \) -prune -o -name Cargo.toml -print | while read -r manifest; do
    dir=$(dirname "$manifest")
    mkdir -p "$dest/$dir"
    cp "$manifest" "$dest/$dir/"
    find "$dir" \( -name target -o -name .git \) -prune -o -type f -name '*.rs' \( \
        -path "$dir/src/lib.rs" -o -path "$dir/src/main.rs" -o -path "$dir/src/bin/*" \
        -o -path "$dir/build.rs" -o -path "$dir/benches/*" -o -path "$dir/tests/*" \
        -o -path "$dir/examples/*" \) -print | while read -r target; do
        mkdir -p "$dest/$(dirname "$target")"
        case $target in
            */src/lib.rs) : > "$dest/$target" ;;
            *) echo 'fn main() {}' > "$dest/$target" ;;
        esac
    done
done
