# Code interpreter tests (crates/bothy-agent/tests/interp.rs, crates/bothy/tests/interp.rs):
# python3 and node for the contexts; matplotlib and pandas so that rich outputs (figures as PNG,
# DataFrames as HTML) are covered. Sandboxes of the host image see the host's /usr.
command -v node >/dev/null || apt_install nodejs
apt_install python3-matplotlib python3-pandas
