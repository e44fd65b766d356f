#!/bin/sh
# Regenerates postconf-defaults.txt: the defaults (`postconf -d`) of the Postfix
# installed on this host, which `mtactl import postfix` takes for every parameter a
# main.cf does not set. Run it from this directory after Postfix is upgraded, then
# `cargo test --lib import` (the tests pin the defaults the translation relies on).
#
# Parameters whose default is computed from the host postconf runs on (its name,
# domain, networks, process id) are left out: the importer derives them from the
# imported main.cf instead (see defaults.rs).
set -eu
{
    printf '# postconf -d of Postfix %s, made by regenerate-defaults.sh: do not edit\n' \
        "$(postconf -dh mail_version)"
    postconf -d | LC_ALL=C sort |
        grep -Ev '^(myhostname|mydomain|mynetworks|process_id|process_name|mail_release_date) = '
} > postconf-defaults.txt
