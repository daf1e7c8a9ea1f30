//! The shell script a set-up is written as: POSIX `sh`, files under `$PREFIX`, and never a setting
//! of the node destroyed. Every file it writes starts with [`MARKER`]; a file that is already
//! there is replaced only if it is empty, identical, or starts with that marker (we wrote it).
//! Anything else stops the script before it changes anything, with the contents to merge by hand.
//! Docker's `daemon.json` (JSON has no comments) is merged instead: our keys are added to the
//! existing file with `python3` where it is present; without it the script stops and says what to
//! add.
//!
//! The script checks everything first and writes after, so it either applies whole or not at all
//! (short of the disk failing under it). Shell code is either a constant or built with
//! [`shell_quote`]d words.

use std::fmt::Write as _;

use super::values::shell_quote;

/// First line of every file a set-up script writes (except `daemon.json`).
pub(super) const MARKER: &str =
    "# Written by registry-proxy setup; running the setup again replaces this file.";

/// Shell functions the checks and writes use (constant code; values come as arguments).
const FUNCTIONS: &str = r#"rp_same() { [ "$(cat "$1"; echo x)" = "$(printf '%s' "$2"; echo x)" ]; }
rp_check() {
  if [ -s "$1" ] && ! rp_same "$1" "$2" && [ "$(head -n 1 "$1")" != "$RP_MARKER" ]; then
    echo "registry-proxy: $1 exists and was not written by registry-proxy; nothing was changed." >&2
    echo "Merge this into it by hand (or move it away and run this again):" >&2
    printf '%s\n' "$2" >&2
    exit 1
  fi
}
rp_write() {
  if [ -s "$1" ] && rp_same "$1" "$2"; then echo "$1 is up to date"; return 0; fi
  printf '%s' "$2" > "$1"
  echo "wrote $1"
  RP_CHANGED=1
}"#;

/// Merges the proxy into an existing `daemon.json`: `argv` = mode (`check` or `merge`), path,
/// mirror URL, insecure registry (empty: none). Adds the mirror first in `registry-mirrors` and the
/// insecure registry to `insecure-registries` when missing; every other key is kept as it is.
/// Prints `merged …` or `unchanged …`.
const MERGE_DAEMON_JSON: &str = r#"import json, os, sys
mode, path, mirror, insecure = sys.argv[1:5]
try:
    with open(path) as f:
        data = json.load(f)
except (OSError, ValueError) as e:
    sys.exit("registry-proxy: cannot read %s as JSON (%s); nothing was changed" % (path, e))
if not isinstance(data, dict):
    sys.exit("registry-proxy: %s is not a JSON object; nothing was changed" % path)
changed = False
for key, value, first in (("registry-mirrors", mirror, True), ("insecure-registries", insecure, False)):
    if not value:
        continue
    current = data.get(key, [])
    if not isinstance(current, list):
        sys.exit("registry-proxy: %s: %s is not a list; nothing was changed" % (path, key))
    if value not in current:
        data[key] = [value] + current if first else current + [value]
        changed = True
if mode == "check":
    sys.exit(0)
if not changed:
    print("unchanged: %s already uses the proxy" % path)
    sys.exit(0)
tmp = path + ".registry-proxy.tmp"
with open(tmp, "w") as f:
    json.dump(data, f, indent=2)
    f.write("\n")
st = os.stat(path)
os.chmod(tmp, st.st_mode & 0o7777)
try:
    os.chown(tmp, st.st_uid, st.st_gid)
except OSError:
    pass
os.replace(tmp, path)
print("merged the proxy into %s (every other setting kept)" % path)
"#;

pub(super) struct Script {
    /// Header: shebang, comments, `PREFIX`, functions.
    head: String,
    /// Checks that run before anything is written.
    checks: String,
    /// Writes and commands, in order.
    pub(super) out: String,
    /// Files declared so far (their contents live in `RP_F<n>` variables).
    files: usize,
}

impl Script {
    pub(super) fn new(title: &str, generated_by: &str, prefix: &str) -> Script {
        let mut s = Script {
            head: String::new(),
            checks: String::new(),
            out: String::new(),
            files: 0,
        };
        let _ = writeln!(s.head, "#!/bin/sh");
        for text in [title, generated_by] {
            for line in text.split('\n') {
                let _ = writeln!(s.head, "# {}", super::inert(line));
            }
        }
        let _ = writeln!(
            s.head,
            "# Existing files are merged into or left alone: the script stops and says what to add rather than replace a setting."
        );
        let _ = writeln!(s.head, "set -eu");
        let _ = writeln!(
            s.head,
            "if [ -z \"${{PREFIX:-}}\" ]; then PREFIX={}; fi",
            shell_quote(prefix)
        );
        let _ = writeln!(
            s.head,
            "if [ -n \"$PREFIX\" ]; then PREFIX_SET=1; else PREFIX_SET=; fi"
        );
        let _ = writeln!(s.head, "RP_CHANGED=");
        let _ = writeln!(s.head, "RP_MARKER={}", shell_quote(MARKER));
        let _ = writeln!(s.head, "{FUNCTIONS}");
        s
    }

    pub(super) fn comment(&mut self, text: &str) {
        for line in text.split('\n') {
            let _ = writeln!(self.out, "# {}", super::inert(line));
        }
    }

    pub(super) fn code(&mut self, line: &'static str) {
        let _ = writeln!(self.out, "{line}");
    }

    pub(super) fn mkdir(&mut self, dir: &str) {
        let _ = writeln!(self.out, "mkdir -p \"$PREFIX\"{}", shell_quote(dir));
    }

    /// Writes `contents` (after [`MARKER`]) to `$PREFIX<path>`, unless a file not ours is there
    /// (then the script stops before writing anything). The contents are one single-quoted word,
    /// so nothing in them is expanded and no line of them can end the command.
    pub(super) fn file(&mut self, path: &str, contents: &str) {
        self.files += 1;
        let var = format!("RP_F{}", self.files);
        let quoted_path = shell_quote(path);
        let _ = writeln!(
            self.checks,
            "{var}={}",
            shell_quote(&format!("{MARKER}\n{contents}"))
        );
        let _ = writeln!(self.checks, "rp_check \"$PREFIX\"{quoted_path} \"${var}\"");
        let dir = path.rsplit_once('/').map_or("", |(d, _)| d);
        self.mkdir(dir);
        let _ = writeln!(self.out, "rp_write \"$PREFIX\"{quoted_path} \"${var}\"");
    }

    /// Docker's `daemon.json` with `registry-mirrors: [mirror]` and, when `insecure` is given,
    /// `insecure-registries: [insecure]`: written whole when there is none, merged into an
    /// existing one with python3 (every other key kept), else the script stops and says what to
    /// add.
    pub(super) fn daemon_json(
        &mut self,
        path: &str,
        fresh: &str,
        mirror: &str,
        insecure: Option<&str>,
    ) {
        let quoted_path = shell_quote(path);
        let _ = writeln!(self.checks, "RP_DJ=\"$PREFIX\"{quoted_path}");
        let _ = writeln!(self.checks, "RP_DJ_FRESH={}", shell_quote(fresh));
        let _ = writeln!(self.checks, "RP_MIRROR={}", shell_quote(mirror));
        let _ = writeln!(
            self.checks,
            "RP_INSECURE={}",
            shell_quote(insecure.unwrap_or(""))
        );
        let _ = writeln!(self.checks, "RP_MERGE={}", shell_quote(MERGE_DAEMON_JSON));
        self.checks.push_str(
            r#"if [ -s "$RP_DJ" ] && ! rp_same "$RP_DJ" "$RP_DJ_FRESH"; then
  if command -v python3 >/dev/null 2>&1; then
    python3 -c "$RP_MERGE" check "$RP_DJ" "$RP_MIRROR" "$RP_INSECURE" || exit 1
  else
    echo "registry-proxy: $RP_DJ exists and python3 is not here to merge into it; nothing was changed." >&2
    echo "Add these to it by hand, keeping every other setting:" >&2
    echo "  \"registry-mirrors\": put \"$RP_MIRROR\" first in the list" >&2
    if [ -n "$RP_INSECURE" ]; then echo "  \"insecure-registries\": add \"$RP_INSECURE\"" >&2; fi
    echo "For a node without a daemon.json, the whole file would be:" >&2
    printf '%s' "$RP_DJ_FRESH" >&2
    exit 1
  fi
fi
"#,
        );
        let dir = path.rsplit_once('/').map_or("", |(d, _)| d);
        self.mkdir(dir);
        self.out.push_str(
            r#"if [ -s "$RP_DJ" ] && ! rp_same "$RP_DJ" "$RP_DJ_FRESH"; then
  RP_OUT=$(python3 -c "$RP_MERGE" merge "$RP_DJ" "$RP_MIRROR" "$RP_INSECURE") || exit 1
  echo "$RP_OUT"
  case "$RP_OUT" in merged*) RP_CHANGED=1 ;; esac
else
  rp_write "$RP_DJ" "$RP_DJ_FRESH"
fi
"#,
        );
    }

    /// Marks the node's configuration changed (a command that cannot tell, such as a download).
    pub(super) fn changed(&mut self) {
        self.code("RP_CHANGED=1");
    }

    /// Restarts a unit on a real node (not when writing under a prefix), if anything changed.
    pub(super) fn restart(&mut self, unit: &'static str, daemon_reload: bool) {
        let reload = if daemon_reload {
            "systemctl daemon-reload; "
        } else {
            ""
        };
        let _ = writeln!(
            self.out,
            "[ -n \"$RP_CHANGED\" ] && command -v systemctl >/dev/null && [ -z \"$PREFIX_SET\" ] && {{ {reload}systemctl restart {}; }} || true",
            shell_quote(unit)
        );
    }

    /// Reloads a unit on a real node (not when writing under a prefix), if anything changed.
    pub(super) fn reload(&mut self, unit: &'static str) {
        let _ = writeln!(
            self.out,
            "[ -n \"$RP_CHANGED\" ] && command -v systemctl >/dev/null && [ -z \"$PREFIX_SET\" ] && systemctl reload {} || true",
            shell_quote(unit)
        );
    }

    pub(super) fn finish(self) -> String {
        format!("{}{}{}", self.head, self.checks, self.out)
    }
}

#[cfg(test)]
mod tests;
