#!/bin/bash
# Build (or reuse) a QEMU guest with Debian's real bluetoothd for the real-BlueZ tier.
#
#   tests/realbluez/build-guest.sh bookworm|trixie
#   tests/realbluez/build-guest.sh --host-tools   # only install qemu, debootstrap etc.
#
# Everything comes from Debian's packages, fetched from the mirror in this
# machine's apt sources. The result lives in a cache outside the repository,
# keyed by a hash of the recipe, and is rebuilt only when the recipe changes:
#   $BLE_SCANNER_GUEST_CACHE (default ${XDG_CACHE_HOME:-~/.cache}/dbus-ble-scanner/guests)
#     <suite>-base-<hash>/   debootstrap root (packages, kernel, small initrd)
#     <suite>-<hash>/        vmlinuz, initrd.img, disk.img (root + our guest agent), info
# The last line printed on stdout is the image directory.
set -euo pipefail

suite=${1:?usage: $0 bookworm|trixie|--host-tools}
case $suite in bookworm|trixie|--host-tools) ;; *) echo "unknown suite: $suite" >&2; exit 2;; esac

here=$(cd "$(dirname "$0")" && pwd)
cache=${BLE_SCANNER_GUEST_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/dbus-ble-scanner/guests}
log() { echo "build-guest[$suite]: $*" >&2; }

# The recipe: packages in the guest and modules in its initrd. Anything that
# changes the base root must change this text, so that its hash changes.
PACKAGES=linux-image-amd64,bluez,bluez-test-tools,dbus,python3,kmod,procps,iproute2
# Enough to mount the root disk; everything else is loaded from it.
INITRD_MODULES="virtio_pci virtio_blk ext4 crc32c_generic"
BASE_RECIPE_VERSION=1

# Debian's release names (and their -updates): a source for one of them with
# component main is a Debian mirror, not security and not a third party's
# repository that reuses the name (those use their own components).
DEBIAN_SUITES='^(buster|bullseye|bookworm|trixie|forky|duke|sid|oldoldstable|oldstable|stable|testing|unstable)(-updates)?$'

deb822_mirror() {  # deb822 files: the first enabled "deb" stanza for a Debian suite with main
    awk -v want="$DEBIAN_SUITES" '
        function has(list, pattern,   n, i, w) {
            n = split(list, w, /[ \t]+/)
            for (i = 1; i <= n; i++) if (w[i] ~ pattern) return 1
            return 0
        }
        function flush(   n, i, u) {
            if (!found && has(f["types"], "^deb$") && tolower(f["enabled"]) != "no" \
                && has(f["suites"], want) && has(f["components"], "^main$")) {
                n = split(f["uris"], u, /[ \t]+/)
                for (i = 1; i <= n; i++) if (u[i] ~ /^https?:/) { print u[i]; found = 1; break }
            }
            delete f
        }
        FNR == 1 { flush() }                              # a file ends a stanza
        /^[ \t]*#/ { next }
        /^[ \t]*$/ { flush(); next }
        /^[ \t]/ { f[key] = f[key] " " $0; next }      # a continuation line
        {
            key = tolower(substr($0, 1, index($0, ":") - 1))
            f[key] = substr($0, index($0, ":") + 1)
            gsub(/^[ \t]+|[ \t]+$/, "", f[key])
        }
        END { flush() }
    ' "$@"
}

oneline_mirror() {  # one-line files: the first "deb URI SUITE main..." for a Debian suite
    awk -v want="$DEBIAN_SUITES" '
        found || /^[ \t]*#/ { next }
        {
            sub(/\[[^]]*\]/, "")                          # [arch=... signed-by=...]
            if ($1 != "deb" || $3 !~ want || $2 !~ /^https?:/) next
            for (i = 4; i <= NF; i++) if ($i == "main") { print $2; found = 1; next }
        }
    ' "$@"
}

mirror() {
    # The first Debian mirror of this machine's apt sources: there is no default,
    # so nothing outside the machine's own configuration decides where to fetch.
    local uri="" sources=(/etc/apt/sources.list.d/*.sources) lists=(/etc/apt/sources.list /etc/apt/sources.list.d/*.list)
    local readable=()
    for f in "${sources[@]}"; do [ -r "$f" ] && readable+=("$f"); done
    if [ ${#readable[@]} -gt 0 ]; then uri=$(deb822_mirror "${readable[@]}" | head -n 1); fi
    if [ -z "$uri" ]; then
        readable=()
        for f in "${lists[@]}"; do [ -r "$f" ] && readable+=("$f"); done
        if [ ${#readable[@]} -gt 0 ]; then uri=$(oneline_mirror "${readable[@]}" | head -n 1); fi
    fi
    if [ -z "$uri" ]; then
        echo "build-guest: no Debian mirror in this machine's apt sources" \
            "(/etc/apt/sources.list.d/*.sources, /etc/apt/sources.list, /etc/apt/sources.list.d/*.list):" \
            "add a \"deb\" source for a Debian suite with component main" >&2
        return 1
    fi
    echo "$uri"
}

need_host_tools() {
    local missing=()
    command -v qemu-system-x86_64 >/dev/null || missing+=(qemu-system-x86)
    command -v qemu-img >/dev/null || missing+=(qemu-utils)
    command -v debootstrap >/dev/null || missing+=(debootstrap)
    command -v mkfs.ext4 >/dev/null || missing+=(e2fsprogs)
    if [ ${#missing[@]} -gt 0 ]; then
        log "installing host packages: ${missing[*]}"
        if [ "$(id -u)" != 0 ]; then echo "need root to install ${missing[*]}" >&2; exit 1; fi
        local out
        out=$(mktemp)
        if ! { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
                --no-install-recommends "${missing[@]}"; } >"$out" 2>&1; then
            tail -30 "$out" >&2; rm -f "$out"; exit 1
        fi
        rm -f "$out"
    fi
}

hash_of() { sha256sum | cut -c1-12; }

if [ "$suite" = --host-tools ]; then  # CI installs them first, then builds in the background
    need_host_tools
    exit 0
fi

MIRROR=$(mirror) || exit 1
base_key=$(printf '%s\n' "$suite" "$PACKAGES" "$INITRD_MODULES" "$MIRROR" "$BASE_RECIPE_VERSION" | hash_of)
image_key=$( { echo "$base_key"; cat "$here/build-guest.sh" "$here/guest/init" "$here/guest/agent.py"; } | hash_of)
base=$cache/$suite-base-$base_key
image=$cache/$suite-$image_key

if [ -f "$image/info" ]; then
    log "cached: $image"
    echo "$image"
    exit 0
fi

if [ "$(id -u)" != 0 ]; then echo "building a guest needs root (debootstrap, chroot)" >&2; exit 1; fi
need_host_tools
mkdir -p "$cache"
start=$(date +%s)

if [ ! -f "$base/done" ]; then
    rm -rf "$base"
    mkdir -p "$base"
    log "debootstrap from $MIRROR (packages: $PACKAGES)"
    debootstrap --variant=minbase --include="$PACKAGES" "$suite" "$base/root" "$MIRROR" \
        >"$base/debootstrap.log" 2>&1 || { tail -30 "$base/debootstrap.log" >&2; exit 1; }
    # A small initrd: only what mounts the root disk (MODULES=most takes ~60 MB and slows boot).
    printf 'MODULES=list\nCOMPRESS=gzip\n' >"$base/root/etc/initramfs-tools/conf.d/realbluez"
    printf '%s\n' $INITRD_MODULES >"$base/root/etc/initramfs-tools/modules"
    kver=$(ls "$base/root/lib/modules" | sort -V | tail -1)
    rm -f "$base/root/boot/initrd.img-"*
    mount -t proc proc "$base/root/proc"
    trap 'umount "$base/root/proc" 2>/dev/null || true' EXIT
    chroot "$base/root" update-initramfs -c -k "$kver" >>"$base/debootstrap.log" 2>&1
    umount "$base/root/proc"; trap - EXIT
    rm -rf "$base/root/var/cache/apt/archives/"*.deb "$base/root/var/lib/apt/lists/"*
    touch "$base/done"
    log "base root ready in $(( $(date +%s) - start )) s"
fi

rm -rf "$image" "$image.tmp"
mkdir -p "$image.tmp"
root=$base/root
kver=$(ls "$root/lib/modules" | sort -V | tail -1)
cp "$root/boot/vmlinuz-$kver" "$image.tmp/vmlinuz"
cp "$root/boot/initrd.img-$kver" "$image.tmp/initrd.img"
# Our guest agent goes into the disk image only, so the base root stays as Debian made it.
truncate -s 2G "$image.tmp/disk.img"
mkfs.ext4 -q -F -L realbluez -d "$root" "$image.tmp/disk.img"
debugfs -w "$image.tmp/disk.img" -f - >/dev/null 2>"$image.tmp/debugfs.log" <<DEBUGFS
mkdir /opt/realbluez
write $here/guest/init /opt/realbluez/init
sif /opt/realbluez/init mode 0100755
write $here/guest/agent.py /opt/realbluez/agent.py
sif /opt/realbluez/agent.py mode 0100644
DEBUGFS
if grep -qi 'error\|not found\|failed' "$image.tmp/debugfs.log"; then cat "$image.tmp/debugfs.log" >&2; exit 1; fi
bluez=$(chroot "$root" dpkg-query -W -f '${Version}' bluez)
{
    echo "suite=$suite"
    echo "kernel=$kver"
    echo "bluez=$bluez"
    echo "mirror=$MIRROR"
    echo "base=$base_key"
    echo "image=$image_key"
} >"$image.tmp/info"
mv "$image.tmp" "$image"
# Older builds of this suite are dead weight (about 1.3 GB each).
for old in "$cache/$suite"-*; do
    case $old in "$base"|"$image") ;; *) rm -rf "$old";; esac
done
log "image ready in $(( $(date +%s) - start )) s: $image (bluez $bluez, kernel $kver)"
echo "$image"
