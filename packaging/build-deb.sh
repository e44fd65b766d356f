#!/usr/bin/env bash
# Builds mtad's Debian package with dpkg-deb (no other tool): mtad_VERSION-1_ARCH.deb
# in target/debian/ (or --out DIR), and prints its path.
#
#   packaging/build-deb.sh                       # cargo build --release, then the package
#   packaging/build-deb.sh --bin-dir target/debug --fast --out DIR
#       the binaries an earlier build made (the install test takes those cargo test
#       built: no second build of the whole tree), gzip -1 instead of xz
#
# Contents (docs/operations.md, "The Debian package"): the three binaries stripped,
# /usr/sbin/mtad, /usr/bin/mtactl, /usr/sbin/sendmail (linked as /usr/lib/sendmail,
# /usr/bin/mailq, /usr/bin/newaliases; setgid mtad-drop by the postinst's
# dpkg-statoverride), /etc/mtad/mtad.kdl (a conffile: packaging/mtad.kdl),
# /usr/share/mtad/policies, the systemd unit (packaging/mtad.service), the man pages
# and completions the binaries generate, the documentation.
set -euo pipefail
cd "$(dirname "$0")/.."

bin_dir=
out=target/debian
compress=(-Zxz)
while [ $# -gt 0 ]; do
  case "$1" in
    --bin-dir) bin_dir=$2; shift 2 ;;
    --out) out=$2; shift 2 ;;
    --fast) compress=(-Zgzip -z1); shift ;;
    *) echo "usage: $0 [--bin-dir DIR] [--out DIR] [--fast]" >&2; exit 2 ;;
  esac
done
if [ -z "$bin_dir" ]; then
  cargo build --release --locked --bins >&2
  bin_dir=target/release
fi
for b in mtad mtactl sendmail; do
  [ -x "$bin_dir/$b" ] || { echo "build-deb: no $bin_dir/$b" >&2; exit 1; }
done

version=$(sed -n 's/^version = "\(.*\)"$/\1/p' Cargo.toml | head -1)
arch=$(dpkg --print-architecture)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
root=$work/root

# binaries, stripped (the release profile keeps line tables for backtraces: 166 MB each)
install -d "$root/usr/sbin" "$root/usr/bin" "$root/usr/lib"
strip --strip-unneeded -o "$root/usr/sbin/mtad" "$bin_dir/mtad"
strip --strip-unneeded -o "$root/usr/bin/mtactl" "$bin_dir/mtactl"
strip --strip-unneeded -o "$root/usr/sbin/sendmail" "$bin_dir/sendmail"
chmod 0755 "$root/usr/sbin/mtad" "$root/usr/bin/mtactl" "$root/usr/sbin/sendmail"
ln -s ../sbin/sendmail "$root/usr/lib/sendmail"
ln -s ../sbin/sendmail "$root/usr/bin/mailq"
ln -s ../sbin/sendmail "$root/usr/bin/newaliases"

# configuration, policies, unit
install -D -m 0644 packaging/mtad.kdl "$root/etc/mtad/mtad.kdl"
install -d "$root/usr/share/mtad/policies"
install -m 0644 policies/*.kdl "$root/usr/share/mtad/policies/"
install -D -m 0644 packaging/mtad.service "$root/lib/systemd/system/mtad.service"

# man pages and completions, from the binaries' own clap definitions and
# docs/configuration.md (mtad::control::manual)
"$root/usr/sbin/mtad" --generate-docs "$root/usr/share"
"$root/usr/bin/mtactl" --generate-docs "$root/usr/share"
find "$root/usr/share/man" -type f -exec gzip -9n {} +
ln -s sendmail.1.gz "$root/usr/share/man/man1/mailq.1.gz"
ln -s sendmail.1.gz "$root/usr/share/man/man1/newaliases.1.gz"

# documentation
doc=$root/usr/share/doc/mtad
install -d "$doc"
install -m 0644 README.md docs/configuration.md docs/hooks.md docs/test-policy.md docs/operations.md docs/local-submission.md docs/smtp.md docs/delivery.md docs/bounces.md "$doc/"
cat >"$doc/copyright" <<EOF
Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/
Upstream-Name: mtad

Files: *
Copyright: the mtad developers
License: Apache-2.0
 On Debian systems the full text of the Apache License 2.0 is in
 /usr/share/common-licenses/Apache-2.0.
EOF

# control files
install -d "$root/DEBIAN"
install -m 0755 packaging/debian/postinst packaging/debian/prerm packaging/debian/postrm "$root/DEBIAN/"
echo /etc/mtad/mtad.kdl >"$root/DEBIAN/conffiles"
# Depends: what the binaries link against, as dpkg-shlibdeps finds it
mkdir -p "$work/shlibs/debian"
printf 'Source: mtad\n\nPackage: mtad\nArchitecture: any\n' >"$work/shlibs/debian/control"
depends=$(cd "$work/shlibs" && dpkg-shlibdeps -O "$root/usr/sbin/mtad" "$root/usr/bin/mtactl" "$root/usr/sbin/sendmail" 2>/dev/null | sed -n 's/^shlibs:Depends=//p')
[ -n "$depends" ] || { echo "build-deb: dpkg-shlibdeps found no dependencies" >&2; exit 1; }
size=$(du -sk --exclude=DEBIAN "$root" | cut -f1)
sed -e "s/@VERSION@/$version-1/" -e "s/@ARCH@/$arch/" -e "s/@SIZE@/$size/" \
    -e "s/@DEPENDS@/$depends/" packaging/debian/control.in >"$root/DEBIAN/control"
(cd "$root" && find . \( -path ./DEBIAN -o -path ./etc \) -prune -o -type f -printf '%P\0' | sort -z | xargs -0 md5sum) >"$root/DEBIAN/md5sums"

mkdir -p "$out"
deb="$out/mtad_${version}-1_${arch}.deb"
dpkg-deb --root-owner-group "${compress[@]}" --build "$root" "$deb" >&2
echo "$deb"
