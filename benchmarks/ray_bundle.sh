#!/usr/bin/env bash
# Ray for a GPU machine that has no Ray and can fetch nothing (the lent H200 machines: Python 3.12, no ray, no
# jsonschema), small enough to carry (the carry limit is 64 MiB; Ray's wheel is 79 MB): Ray's wheel for
# CPython 3.12 without its Java jars, its libraries that evoforge doesn't use (rllib, data, serve, train, tune,
# llm), the dashboard's web client and tests, plus jsonschema and what it needs beyond that machine's image.
# About 21 MB of xz. Checked with the same stripping of Ray 2.60 on Python 3.11: tests/test_executor_ray.py and
# `evoforge run --executor ray --address local` pass.
#
#   bash benchmarks/ray_bundle.sh [.raybundle/ray-cp312-bundle.tar.xz]
#   # carry .raybundle, then on the machine:
#   mkdir -p /tmp/raypkg && tar -xJf .raybundle/ray-cp312-bundle.tar.xz -C /tmp/raypkg && export PYTHONPATH=/tmp/raypkg
set -euo pipefail
out=${1:-.raybundle/ray-cp312-bundle.tar.xz}
version=${RAY_VERSION:-2.60.0}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
python3 -m pip download "ray==$version" --no-deps --only-binary=:all: --python-version 3.12 \
    --platform manylinux2014_x86_64 -d "$work/wheels" -q
python3 -m pip download jsonschema --only-binary=:all: --python-version 3.12 --platform manylinux2014_x86_64 \
    -d "$work/wheels" -q
mkdir "$work/pkg"
for wheel in "$work"/wheels/ray-*.whl "$work"/wheels/jsonschema-*.whl "$work"/wheels/jsonschema_specifications-*.whl \
             "$work"/wheels/referencing-*.whl "$work"/wheels/rpds_py-*.whl; do
    unzip -q -o "$wheel" -d "$work/pkg"
done
rm -rf "$work"/pkg/ray/{jars,rllib,data,serve,train,tune,llm} "$work/pkg/ray/dashboard/client"
find "$work/pkg/ray" -type d -name tests -prune -exec rm -rf {} +
mkdir -p "$(dirname "$out")"
tar -C "$work/pkg" -cf - . | xz -9 -T0 > "$out"
ls -la "$out"
