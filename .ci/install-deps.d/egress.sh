# Egress (issue 9): openssl (the trust test mints a leaf with the daemon's CA and serves it with
# `openssl s_server` inside a sandbox), curl (the client inside sandboxes; sandboxes of the host
# image see the host's /usr), ca-certificates (the host's roots, which the sandboxes' bundle
# extends).
apt_install openssl curl ca-certificates
