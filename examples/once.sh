# Sourced by the example scripts: `once FILE oodflow-args...` runs `oodflow ARGS` unless FILE exists,
# echoing the command and its wall time on stderr, so an interrupted example continues where it stopped.
# A model file that `train` left behind when it was interrupted (it writes one on Ctrl-C and at every
# epoch) does not count as done: the same command runs again with --resume and finishes it.
once() {
  local file=$1; shift
  if [[ -e $file ]]; then
    if [[ $1 == train && $(_once_status "$file") == interrupted ]]; then
      echo "\$ oodflow $* --resume   # $file was interrupted" >&2
      _once_run "$@" --resume
    else
      echo "# exists, skipped: oodflow $*" >&2
    fi
    return
  fi
  echo "\$ oodflow $*" >&2
  _once_run "$@"
}

_once_run() {
  local t0=$SECONDS
  oodflow "$@"
  echo "# took $((SECONDS - t0)) s" >&2
}

_once_status() {  # the run state `oodflow info` reads from a model file: finished, interrupted, ...
  oodflow info "$1" --json | python3 -c 'import json, sys; print(json.load(sys.stdin).get("status", ""))'
}
