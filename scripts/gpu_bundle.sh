#!/usr/bin/env bash
# Prepare what the GPU self-check needs on the device machine, which has no network and no
# ../shared: the wheels of posebh's dependencies missing from its image (.whl/) and the shared
# data the self-check reads (.gpu/shared/). Both folders are git-ignored through
# .git/info/exclude and travel with `carry`. See DEVELOPERS.md, "A GPU machine".
set -euo pipefail
cd "$(dirname "$0")/.."
shared="${POSEBH_SHARED:-../shared}"
for d in /.whl/ /.gpu/; do grep -qxF "$d" .git/info/exclude 2>/dev/null || echo "$d" >>.git/info/exclude; done
rm -rf .whl .gpu && mkdir -p .whl .gpu/shared/data/golden .gpu/shared/data/mmpose_testdata
# The device image lacks these three of posebh's dependencies (DEVELOPERS.md lists its packages).
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 \
  --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 \
  --platform manylinux2014_x86_64 -d .whl pycocotools==2.0.11 simplejpeg==1.9.0 orjson==3.13.0
cp "$shared/data/golden/official_tiny_model.pt" .gpu/shared/data/golden/
cp -r "$shared/data/mmpose_testdata/coco" .gpu/shared/data/mmpose_testdata/
du -sh .whl .gpu
