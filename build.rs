//! Records which commit the binaries are built from, for `mtad --version` and
//! `mtactl --version` (`MTAD_COMMIT` at compile time, read by
//! `mtad::control::VERSION`): `git rev-parse --short HEAD` in a git checkout, with
//! `-dirty` when tracked files differ from it; else the `MTAD_COMMIT` environment
//! variable (a source tarball's build sets it); else `unknown`.

use std::process::Command;

fn git(args: &[&str]) -> Option<String> {
    let out = Command::new("git").args(args).output().ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

fn main() {
    println!("cargo:rerun-if-env-changed=MTAD_COMMIT");
    let commit = match git(&["rev-parse", "--short=12", "HEAD"]) {
        Some(hash) if !hash.is_empty() => {
            // rebuild the stamp when HEAD moves or a source changes; not when the
            // index does (`git add`, or any `git status` refreshing it, would rebuild
            // mtad every time)
            let head = git(&["symbolic-ref", "-q", "HEAD"]);
            let watched = ["HEAD", "packed-refs"].into_iter().chain(head.as_deref());
            for name in watched {
                // --git-path: right in a worktree too, where refs live in the common dir
                if let Some(path) = git(&["rev-parse", "--git-path", name])
                    && std::path::Path::new(&path).exists()
                {
                    println!("cargo:rerun-if-changed={path}");
                }
            }
            let sources = ["src", "Cargo.toml", "Cargo.lock", "build.rs"];
            for tracked in sources {
                println!("cargo:rerun-if-changed={tracked}");
            }
            // --no-optional-locks: without writing the index (its refresh would be
            // a change to watch)
            let status = [
                "--no-optional-locks",
                "status",
                "--porcelain",
                "--untracked-files=no",
                "--",
            ];
            let dirty = git(&[&status[..], &sources[..]].concat()).is_some_and(|s| !s.is_empty());
            if dirty { format!("{hash}-dirty") } else { hash }
        }
        _ => std::env::var("MTAD_COMMIT")
            .ok()
            .filter(|c| !c.is_empty())
            .unwrap_or_else(|| "unknown".to_owned()),
    };
    println!("cargo:rustc-env=MTAD_COMMIT={commit}");
}
