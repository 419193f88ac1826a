# Blob stores (issue 8), sourced by .ci/run from the repository root: an S3-compatible server
# for the export/import/evict/backup tests. moto's standalone server speaks S3 over HTTP
# (SigV4, multipart) and keeps objects in memory; bothy_testkit::S3Server starts it on a free
# port per test.
if ! command -v moto_server >/dev/null; then
  if ! python3 -m pip --version >/dev/null 2>&1; then apt_install python3-pip; fi
  python3 -m pip install --quiet 'moto[server]' 2>/dev/null \
    || python3 -m pip install --quiet --break-system-packages 'moto[server]'
  hash -r
fi
command -v moto_server >/dev/null || { echo "moto_server not on PATH after install" >&2; exit 1; }
