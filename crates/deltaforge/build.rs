//! Build script: records the git commit the binary is built from as
//! `DELTAFORGE_GIT_COMMIT` (shown by `deltaforge --version`).
//!
//! The commit is `git rev-parse --short HEAD`, or the environment variable
//! `DELTAFORGE_GIT_COMMIT` when set (packagers building from a tarball), or
//! `unknown` when git or the repository is absent. It never fails the build.
//! Cargo reruns it when HEAD moves: it watches the HEAD file of the
//! repository (or worktree), the branch's ref file and `packed-refs`.

use std::path::{Path, PathBuf};
use std::process::Command;

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-env-changed=DELTAFORGE_GIT_COMMIT");
    let commit = match std::env::var("DELTAFORGE_GIT_COMMIT") {
        Ok(c) if !c.trim().is_empty() => c.trim().to_string(),
        _ => {
            watch_git_files();
            git(&["rev-parse", "--short", "HEAD"]).unwrap_or_else(|| "unknown".to_string())
        }
    };
    println!("cargo:rustc-env=DELTAFORGE_GIT_COMMIT={commit}");
}

/// Prints `rerun-if-changed` for HEAD, the current branch's ref and
/// `packed-refs`, only for files that exist (a missing path would make cargo
/// rerun the script on every build).
fn watch_git_files() {
    let (Some(git_dir), Some(common_dir)) = (git_path("--git-dir"), git_path("--git-common-dir")) else {
        return;
    };
    let mut files = vec![git_dir.join("HEAD"), common_dir.join("packed-refs")];
    if let Some(reference) = git(&["symbolic-ref", "-q", "HEAD"]) {
        files.push(git_dir.join(&reference));
        files.push(common_dir.join(&reference));
    }
    for f in files.iter().filter(|f| f.is_file()) {
        println!("cargo:rerun-if-changed={}", f.display());
    }
}

/// `git rev-parse {flag}` as an absolute path (git prints it relative to
/// the current directory for a plain repository).
fn git_path(flag: &str) -> Option<PathBuf> {
    let p = PathBuf::from(git(&["rev-parse", flag])?);
    if p.is_absolute() {
        Some(p)
    } else {
        Some(Path::new(&std::env::var("CARGO_MANIFEST_DIR").ok()?).join(p))
    }
}

/// The trimmed standard output of `git {args}` run in the crate's
/// directory, or `None` when git is missing or fails.
fn git(args: &[&str]) -> Option<String> {
    let dir = std::env::var("CARGO_MANIFEST_DIR").ok()?;
    let out = Command::new("git").args(args).current_dir(dir).output().ok()?;
    if !out.status.success() {
        return None;
    }
    let s = String::from_utf8(out.stdout).ok()?.trim().to_string();
    (!s.is_empty()).then_some(s)
}
