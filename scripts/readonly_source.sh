#!/usr/bin/env bash
# Runs a test with the source tree read-only: `bazel test` runs every test
# through this (.bazelrc: test --run_under), so that a test cannot write
# into the checkout through its runfiles' symlinks, as Bazel's linux-sandbox
# would forbid. Builds and tests use the quieter processwrapper-sandbox
# (Debian's linux-sandbox prints debug lines under every action).
#
# A private mount namespace (for root) or one in a user namespace mapped to
# the caller's own uid (no privileges needed); nothing changes outside this
# process tree;
# where the kernel refuses user namespaces the test runs as it is, with a
# warning in its log.
set -u
here=$(readlink -f "${BASH_SOURCE[0]}")
src=$(dirname "$(dirname "$here")")
if [[ ! -f "$src/WORKSPACE" ]]; then
  echo "readonly_source: no WORKSPACE above $here; running unprotected" >&2
  exec "$@"
fi
# As root, a mount namespace alone: the test keeps the real uids, so tests
# that switch to another user (tests/start_methods_test.cc) can.
if [[ $(id -u) -eq 0 ]] && unshare --mount true 2>/dev/null; then
  exec unshare --mount /bin/sh -c '
    mount --bind "$0" "$0" && mount -o remount,bind,ro "$0" || {
      echo "readonly_source: cannot make $0 read-only; running unprotected" >&2; }
    exec "$@"' "$src" "$@"
fi
if unshare --user --map-current-user --mount true 2>/dev/null; then
  exec unshare --user --map-current-user --mount /bin/sh -c '
    mount --bind "$0" "$0" && mount -o remount,bind,ro "$0" || {
      echo "readonly_source: cannot make $0 read-only; running unprotected" >&2; }
    exec "$@"' "$src" "$@"
fi
echo "readonly_source: no user namespaces here; running with $src writable" >&2
exec "$@"
