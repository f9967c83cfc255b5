# Sourced by the example scripts: `once FILE oodflow-args...` runs `oodflow ARGS` unless FILE exists,
# echoing the command and its wall time on stderr, so an interrupted example continues where it stopped.
once() {
  local file=$1; shift
  if [[ -e $file ]]; then echo "# exists, skipped: oodflow $*" >&2; return; fi
  echo "\$ oodflow $*" >&2
  local t0=$SECONDS
  oodflow "$@"
  echo "# took $((SECONDS - t0)) s" >&2
}
