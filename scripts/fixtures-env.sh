# Sourced by scripts/test.sh and .ci/run (bash, from the repository's root): makes sure the
# real images the tests and benchmarks read exist, building them with Debian's tools
# (../shared/scripts/make-fixtures.sh, as root) when this checkout has none.
# The shared fixtures: ../shared/fixtures, else rebuilt into /var/tmp.
if [ -z "${LAYERFS_FIXTURES:-}" ] && [ ! -f ../shared/fixtures/busybox/oci/index.json ]; then
  out=/var/tmp/layerfs-fixtures/out
  if [ ! -f "$out/busybox/oci/index.json" ]; then
    echo "../shared/fixtures missing: rebuilding them in $out" >&2
    STEPS="deps busybox exports" ../shared/scripts/make-fixtures.sh "$out"
  fi
  export LAYERFS_FIXTURES=$out
fi
# The Debian image (debootstrap from the machine's apt mirror: a few minutes, once) for
# the rootless real-work test (tests/rootless_debian.rs) and the full benchmarks.
if [ -z "${LAYERFS_DEBIAN_OCI:-}" ] && [ ! -f /var/tmp/layerfs-fixtures/out/debian/oci/index.json ]; then
  STEPS="deps debian" ../shared/scripts/make-fixtures.sh /var/tmp/layerfs-fixtures/out
fi
