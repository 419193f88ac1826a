# Code interpreter tests: rich outputs (matplotlib figures as PNG, pandas DataFrames as HTML)
# need these in the host image that sandboxes see. python3 and node are there already.
if ! /usr/bin/python3 -c 'import matplotlib, pandas' 2>/dev/null; then
    apt-get install -y --no-install-recommends python3-matplotlib python3-pandas
fi
