#!/usr/bin/env bash
# make deb: dist/mp-hsm_<version>_<arch>.deb for amd64 and arm64, built with
# dpkg-deb from a staged tree, reproducibly: the same commit gives the same
# bytes (every date is the commit's, file lists are sorted, owners are root,
# modes and compression are fixed, and the binary is built with -trimpath
# and no build ID). Then lintian, which must find nothing.
#
#   ARCHES="amd64"   only these architectures (default: amd64 arm64)
#   DIST=dir         write the packages there (default: dist)
#   LINTIAN=0        skip lintian
#
# The binary for another architecture than this machine's is cross-built
# with Debian's cross compiler (gcc-aarch64-linux-gnu, cgo is required);
# scripts/deps.sh installs what this needs.
set -euo pipefail
cd "$(dirname "$0")/.."

GO=${GO:-go}
DIST=${DIST:-dist}
ARCHES=${ARCHES:-amd64 arm64}
LINTIAN=${LINTIAN:-1}
export LC_ALL=C TZ=UTC
umask 022

describe=$(git describe --tags --always --dirty)
export SOURCE_DATE_EPOCH=${SOURCE_DATE_EPOCH:-$(git log -1 --format=%ct)}
host=$(dpkg --print-architecture)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
mkdir -p "$DIST"

"$GO" build -o "$work/debtool" ./packaging/cmd/debtool
version=$("$work/debtool" version "$describe" "$SOURCE_DATE_EPOCH")
echo "deb: mp-hsm $version ($describe) for $ARCHES" >&2

# build ARCH OUT: the binary, with Debian's hardening flags for the C part
# (dpkg-buildflags; -ffile-prefix-map keeps the checkout's path out),
# stripped (-s -w) and without Go's build ID.
build() {
	local arch=$1 out=$2 cross=
	if [ "$arch" != "$host" ]; then
		case $arch in
		arm64) cross=aarch64-linux-gnu- ;;
		amd64) cross=x86_64-linux-gnu- ;;
		*) echo "deb: no cross compiler known for $arch" >&2; return 1 ;;
		esac
	fi
	local flags="DEB_HOST_ARCH=$arch DEB_BUILD_MAINT_OPTIONS=hardening=+all"
	CGO_ENABLED=1 GOOS=linux GOARCH=$arch CC=${cross}gcc \
		CGO_CFLAGS="$(env $flags dpkg-buildflags --get CFLAGS)" \
		CGO_CPPFLAGS="$(env $flags dpkg-buildflags --get CPPFLAGS)" \
		CGO_LDFLAGS="$(env $flags dpkg-buildflags --get LDFLAGS)" \
		"$GO" build -trimpath -buildvcs=false -buildmode=pie \
		-ldflags "-s -w -buildid= -X main.buildVersion=$describe" \
		-o "$out" ./cmd/mp-hsm
	# As dh_strip does: the C compiler's version notes are of no use.
	"${cross}objcopy" --remove-section=.comment "$out"
}

# Man pages and completions come from this machine's binary: they are the
# same for every architecture.
build "$host" "$work/mp-hsm.$host"
hostbin=$work/mp-hsm.$host
mkdir "$work/man"
"$hostbin" man-pages "$work/man" >/dev/null

maintainer=$(sed -n 's/^Maintainer: //p' contrib/debian/control)
changelog_date=$(date -u -R -d "@$SOURCE_DATE_EPOCH")

for arch in $ARCHES; do
	bin=$work/mp-hsm.$arch
	[ -e "$bin" ] || build "$arch" "$bin"
	root=$work/root.$arch
	doc=$root/usr/share/doc/mp-hsm
	install -d "$root/DEBIAN" "$root/usr/bin" "$root/usr/share/man/man1" "$doc" \
		"$root/usr/lib/systemd/system" "$root/usr/lib/sysusers.d" "$root/usr/lib/tmpfiles.d" \
		"$root/usr/share/bash-completion/completions" "$root/usr/share/zsh/vendor-completions" \
		"$root/usr/share/fish/vendor_completions.d" "$root/etc/mp-hsm"

	install -m 0755 "$bin" "$root/usr/bin/mp-hsm"
	for page in "$work"/man/*.1; do
		gzip -9n <"$page" >"$root/usr/share/man/man1/$(basename "$page").gz"
	done
	"$hostbin" completion bash >"$root/usr/share/bash-completion/completions/mp-hsm"
	"$hostbin" completion zsh >"$root/usr/share/zsh/vendor-completions/_mp-hsm"
	"$hostbin" completion fish >"$root/usr/share/fish/vendor_completions.d/mp-hsm.fish"
	install -m 0644 contrib/systemd/mp-hsm.service contrib/systemd/mp-hsm.socket "$root/usr/lib/systemd/system/"
	install -m 0644 contrib/systemd/mp-hsm.sysusers "$root/usr/lib/sysusers.d/mp-hsm.conf"
	install -m 0644 contrib/systemd/mp-hsm.tmpfiles "$root/usr/lib/tmpfiles.d/mp-hsm.conf"
	install -m 0644 contrib/systemd/mp-hsm.env "$root/etc/mp-hsm/mp-hsm.env"
	for page in docs/daemon.md docs/lifecycle.md; do
		gzip -9n <"$page" >"$doc/$(basename "$page").gz"
	done

	"$work/debtool" copyright "$bin" "$("$GO" env GOROOT)" "$("$GO" env GOMODCACHE)" >"$doc/copyright"
	# A native package's changelog: one entry, for the commit built.
	printf 'mp-hsm (%s) unstable; urgency=medium\n\n  * Built from %s, git commit\n    %s.\n\n -- %s  %s\n' \
		"$version" "$describe" "$(git rev-parse HEAD)" "$maintainer" "$changelog_date" |
		gzip -9n >"$doc/changelog.gz"

	install -m 0755 contrib/debian/postinst contrib/debian/prerm contrib/debian/postrm "$root/DEBIAN/"
	install -m 0644 contrib/debian/conffiles "$root/DEBIAN/conffiles"
	(cd "$root" && find . -path ./DEBIAN -prune -o -type f -printf '%P\n' | sort | xargs -d '\n' md5sum) >"$root/DEBIAN/md5sums"
	# Installed-Size as dpkg-gencontrol counts it: KiB per file, 1 per directory.
	size=$(cd "$root" && find . -path ./DEBIAN -prune -o \( -type f -printf '%s\n' \) -o -printf '1024\n' |
		awk '{ kib += int(($1 + 1023) / 1024) } END { print kib }')
	sed -e "s/@VERSION@/$version/" -e "s/@ARCH@/$arch/" -e "s/@INSTALLED_SIZE@/$size/" \
		-e "s/@DEPENDS@/$("$work/debtool" depends "$bin")/" contrib/debian/control >"$root/DEBIAN/control"
	chmod 0644 "$root/DEBIAN/control" "$root/DEBIAN/md5sums"

	# Fixed modes and dates; dpkg-deb sorts the members and clamps their
	# times to SOURCE_DATE_EPOCH, and one xz thread compresses the same
	# bytes on any machine.
	find "$root" -type d -exec chmod 0755 {} +
	find "$root" -exec touch -h -d "@$SOURCE_DATE_EPOCH" {} +
	deb=$DIST/mp-hsm_${version}_$arch.deb
	dpkg-deb --root-owner-group -Zxz --threads-max=1 --build "$root" "$deb" >/dev/null
	echo "deb: $deb ($(stat -c %s "$deb") bytes)" >&2
	if [ "$LINTIAN" != 0 ]; then
		lintian --fail-on error,warning --display-info "$deb" >&2
	fi
done
