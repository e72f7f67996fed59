#!/usr/bin/env bash
# make image: dist/mp-hsm-image_<version>_amd64.tar, an OCI image archive
# (podman load -i FILE; skopeo copy oci-archive:FILE ...), reproducibly: the
# same commit and the same Debian packages give the same bytes.
#
# Two layers, written by packaging/cmd/imagetool (sorted entries, owner
# root, every time the commit's, gzip without names or times):
#   1. from this machine's Debian packages, nothing downloaded: the C
#      library and loader, p11-kit's proxy and client modules, OpenSC's
#      module with libpcsclite (a card through a mounted pcscd socket), the
#      libraries they load, found with ldd; CA certificates (the bundle of
#      the ca-certificates package's own files, not this machine's
#      /etc/ssl, which may hold local CAs); each package's copyright file
#      and its dpkg status in /var/lib/dpkg/status.d (as distroless images
#      do, so that scanners know the versions); /etc/passwd and /etc/group
#      with the user mp-hsm (65532); /tmp; /run/mp-hsm, the user's.
#   2. mp-hsm and its copyright file, taken from the Debian package of the
#      same commit (scripts/deb.sh builds it: the same hardened binary).
# No shell, no package manager. ENTRYPOINT /usr/bin/mp-hsm, USER 65532:65532.
#
#   DEB_DIR=dir    take mp-hsm from the package of this commit in dir (make
#                  test-image: the one test-deb just built) instead of
#                  building one
#   DIST=dir       write the archive there (default: dist)
# It prints the archive's path on stdout, and what it does on stderr.
set -euo pipefail
cd "$(dirname "$0")/.."

GO=${GO:-go}
DIST=${DIST:-dist}
export LC_ALL=C TZ=UTC
umask 022

arch=$(dpkg --print-architecture)
ma=$(dpkg-architecture -qDEB_HOST_MULTIARCH)
uid=65532
describe=$(git describe --tags --always --dirty)
revision=$(git rev-parse HEAD)
export SOURCE_DATE_EPOCH=${SOURCE_DATE_EPOCH:-$(git log -1 --format=%ct)}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
mkdir -p "$DIST"

"$GO" build -o "$work/debtool" ./packaging/cmd/debtool
"$GO" build -o "$work/imagetool" ./packaging/cmd/imagetool
version=$("$work/debtool" version "$describe" "$SOURCE_DATE_EPOCH")
# An image tag allows [A-Za-z0-9_.-] only: 1.2.3~rc1 -> 1.2.3-rc1.
tag=$(printf '%s' "$version" | tr '~+' '--')
echo "image: mp-hsm $version ($describe) for $arch" >&2

if [ -z "${DEB_DIR:-}" ]; then
	DEB_DIR=$work/deb
	ARCHES=$arch LINTIAN=0 DIST="$DEB_DIR" ./scripts/deb.sh
fi
DEB=$DEB_DIR/mp-hsm_${version}_$arch.deb
[ -f "$DEB" ] || { echo "image: no package $DEB" >&2; exit 1; }

# Layer 2: mp-hsm from the package.
app=$work/app
dpkg-deb -x "$DEB" "$work/deb-tree"
install -D -m 0755 "$work/deb-tree/usr/bin/mp-hsm" "$app/usr/bin/mp-hsm"
install -D -m 0644 "$work/deb-tree/usr/share/doc/mp-hsm/copyright" "$app/usr/share/doc/mp-hsm/copyright"

# Layer 1: what mp-hsm and the modules load, from the packages installed
# here, at their paths (usr-merged: /lib and /lib64 are links into /usr).
base=$work/base
mkdir -p "$base/usr/lib" "$base/usr/lib64" "$base/etc/ssl/certs" "$base/tmp" "$base/run/mp-hsm" \
	"$base/var/lib/dpkg/status.d"
ln -s usr/lib "$base/lib"
ln -s usr/lib64 "$base/lib64"
chmod 1777 "$base/tmp"
declare -A copied=() pkgs=()
files=()

# copy PATH: PATH into the base layer as it is on this machine (a link as a
# link, and then its target), with its directory's real name.
copy() {
	local d n q t
	d=$(realpath -e "$(dirname "$1")")
	n=$(basename "$1")
	q=$d/$n
	[ -z "${copied[$q]:-}" ] || return 0
	copied[$q]=1
	mkdir -p "$base$d"
	if [ -L "$q" ]; then
		cp -P "$q" "$base$q"
		t=$(readlink "$q")
		case $t in /*) copy "$t" ;; *) copy "$d/$t" ;; esac
	else
		cp "$q" "$base$q"
		files+=("$q")
	fi
}

# copy_closure FILE: FILE and every library it loads, as ldd finds them.
copy_closure() {
	local lib
	copy "$1"
	for lib in $(ldd "$1" | sed -n 's/.*=> \(\/[^ ]*\) .*/\1/p; s/^[[:space:]]*\(\/[^ ]*\) .*/\1/p'); do
		copy "$lib"
	done
}

mods=(
	"/usr/lib/$ma/p11-kit-proxy.so"        # mp-hsm's default module
	"/usr/lib/$ma/pkcs11/p11-kit-client.so" # a token behind p11-kit server (P11_KIT_SERVER_ADDRESS)
	"/usr/lib/$ma/opensc-pkcs11.so"         # smart cards, through pcscd's socket
	"/usr/lib/$ma/pkcs11/opensc-pkcs11.so"
	"/usr/lib/$ma/libpcsclite.so.1" # OpenSC loads it with dlopen
)
# Exactly mp-hsm's own dependencies, checked for: with -s ldd also lists
# the loader.
for f in "$app/usr/bin/mp-hsm" "${mods[@]}"; do
	[ -e "$f" ] || { echo "image: $f is missing (scripts/deps.sh image installs it)" >&2; exit 1; }
	if [ "$f" = "$app/usr/bin/mp-hsm" ]; then
		for lib in $(ldd "$f" | sed -n 's/.*=> \(\/[^ ]*\) .*/\1/p; s/^[[:space:]]*\(\/[^ ]*\) .*/\1/p'); do copy "$lib"; done
	else
		copy_closure "$f"
	fi
done
copy /usr/lib/os-release
ln -s ../usr/lib/os-release "$base/etc/os-release"

# The package of each file, under any of its usr-merge names, from dpkg's
# file lists in one pass (dpkg-query -S takes a second per file).
for f in "${files[@]}"; do printf '%s\n%s\n%s\n' "$f" "${f#/usr}" "/usr$f"; done >"$work/names"
grep -Fx -f "$work/names" /var/lib/dpkg/info/*.list | sed 's|^/var/lib/dpkg/info/\(.*\)\.list:|\1 |' >"$work/owners"
for f in "${files[@]}"; do
	p=$(awk -v a="$f" -v b="${f#/usr}" -v c="/usr$f" '$2 == a || $2 == b || $2 == c { print $1; exit }' "$work/owners")
	[ -n "$p" ] || { echo "image: $f belongs to no Debian package" >&2; exit 1; }
	pkgs[$p]=1
done

# The CA bundle from the package's certificates, in a fixed order.
dpkg-query -L ca-certificates | grep '^/usr/share/ca-certificates/.*\.crt$' | sort | xargs cat \
	>"$base/etc/ssl/certs/ca-certificates.crt"
pkgs[ca-certificates]=1

for p in "${!pkgs[@]}"; do
	name=${p%%:*}
	dpkg-query -s "$p" | grep -v '^Conffiles:\|^ /' >"$base/var/lib/dpkg/status.d/$name"
	install -D -m 0644 "$(realpath -e "/usr/share/doc/$name/copyright")" "$base/usr/share/doc/$name/copyright"
done

printf 'root:x:0:0:root:/root:/usr/sbin/nologin\nmp-hsm:x:%d:%d:mp-hsm:/nonexistent:/usr/sbin/nologin\n' $uid $uid >"$base/etc/passwd"
printf 'root:x:0:\nmp-hsm:x:%d:\n' $uid >"$base/etc/group"

out=$DIST/mp-hsm-image_${version}_$arch.tar
digest=$("$work/imagetool" -out "$out" -arch "$arch" -epoch "$SOURCE_DATE_EPOCH" -ref "mp-hsm:$tag" \
	-entrypoint /usr/bin/mp-hsm -user "$uid:$uid" -owner "run/mp-hsm=$uid:$uid" \
	-env PATH=/usr/bin -env XDG_RUNTIME_DIR=/run/mp-hsm \
	-label org.opencontainers.image.title=mp-hsm \
	-label "org.opencontainers.image.description=Maskinporten tokens signed with a key on a smart card or HSM (PKCS#11)" \
	-label org.opencontainers.image.source=https://github.com/mp-hsm/mp-hsm \
	-label "org.opencontainers.image.revision=$revision" \
	-label "org.opencontainers.image.version=$describe" \
	-label org.opencontainers.image.licenses=Apache-2.0 \
	-label "org.opencontainers.image.created=$(date -u -d "@$SOURCE_DATE_EPOCH" +%Y-%m-%dT%H:%M:%SZ)" \
	"$base=Debian $(cat /etc/debian_version): C library, p11-kit and OpenSC modules, CA certificates ($(printf '%s\n' "${!pkgs[@]}" | sort | tr '\n' ' '))" \
	"$app=mp-hsm $describe from $(basename "$DEB")")
echo "image: $out ($(stat -c %s "$out") bytes, manifest $digest)" >&2
echo "$out"
