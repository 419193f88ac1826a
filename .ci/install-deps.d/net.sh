# Sandbox networking (issue 9), sourced by .ci/run from the repository root: nftables for the
# daemon's firewall table (proxy mode), curl and python3 for the probes inside sandboxes, git
# for the checkout tests (its http-backend serves the test repositories).
apt_install nftables curl git python3
