#!/usr/bin/env bash
# Fetch and unzip the JVS corpus (jvs_ver1.zip: about 3.5 GB, 5.1 GB unzipped) from the Google
# Drive file that the official page links. Read the terms in README.md first.
#
#   datasets/jvs/download.sh [DEST]        DEST defaults to data/jvs (git ignores data/)
#
# Leaves DEST/jvs_ver1/jvs001 … jvs100, the folder `prepare jvs --root` takes.
# Needs gdown (pip install gdown) and unzip. Set JVS_SKIP_SHA256=1 to skip the checksum test.
set -euo pipefail

dest="${1:-data/jvs}"
drive_id="19oAw8wWn3Y7z6CKChRdAyGOB9yupL_Xt"  # the file linked from the official JVS page
# SHA-256 of jvs_ver1.zip as recorded by two independent public projects (not by the authors):
# a mismatch most often means Drive sent its quota or warning page instead of the zip.
expected_sha256="37180e2f87bd1a3e668d7c020378f77cebf61dd57d4d74c71eb0114f386a3999"
zip="$dest/jvs_ver1.zip"

if [ -d "$dest/jvs_ver1/jvs100" ]; then
    echo "JVS is already unzipped in $dest/jvs_ver1; nothing to do."
    exit 0
fi
for tool in gdown unzip; do
    command -v "$tool" >/dev/null || { echo "error: $tool not found (pip install gdown; apt-get install unzip)." >&2; exit 1; }
done

mkdir -p "$dest"
if [ ! -f "$zip" ]; then
    # Download under a temporary name so an interrupted run is not taken for a finished one.
    gdown "https://drive.google.com/uc?id=$drive_id" -O "$zip.part"
    mv "$zip.part" "$zip"
fi

if [ "${JVS_SKIP_SHA256:-0}" != 1 ]; then
    if command -v sha256sum >/dev/null; then
        actual=$(sha256sum "$zip" | cut -d' ' -f1)
    else
        actual=$(shasum -a 256 "$zip" | cut -d' ' -f1)  # macOS
    fi
    if [ "$actual" != "$expected_sha256" ]; then
        echo "error: $zip has SHA-256 $actual, expected $expected_sha256." >&2
        echo "Delete it and retry (Drive may have sent a quota page), or, if the authors have" >&2
        echo "updated the archive, rerun with JVS_SKIP_SHA256=1." >&2
        exit 1
    fi
fi

unzip -q "$zip" -d "$dest"
echo "JVS unzipped to $dest/jvs_ver1. Next:"
echo "  python -m whisper_ft prepare jvs --root $dest/jvs_ver1 --out data/jvs/manifests"
