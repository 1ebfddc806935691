//! Records the commit the hub is built from, for `raccordo --version`.
//!
//! `RACCORDO_COMMIT` becomes the short hash of `HEAD`, with `+dirty` when
//! tracked files differ from it, read with `git` when the workspace is a
//! git checkout (CI's clones are); a source tree without `.git` (a tarball,
//! a container build context) or a machine without `git` gives `unknown`.
//! A packager may set `RACCORDO_BUILD_COMMIT` to name the commit instead.

use std::path::{Path, PathBuf};
use std::process::Command;

fn main() {
    println!("cargo:rerun-if-env-changed=RACCORDO_BUILD_COMMIT");
    let commit = match std::env::var("RACCORDO_BUILD_COMMIT") {
        Ok(given) if !given.trim().is_empty() => given.trim().to_owned(),
        _ => from_git().unwrap_or_else(|| "unknown".to_owned()),
    };
    println!("cargo:rustc-env=RACCORDO_COMMIT={commit}");
}

/// The commit from git, or `None` when the workspace is not a checkout of
/// its own (git missing, no `.git`, or a tarball unpacked inside some other
/// repository).
fn from_git() -> Option<String> {
    let manifest = PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR")?);
    let workspace = manifest.parent()?.to_path_buf();
    let toplevel = git(&workspace, &["rev-parse", "--show-toplevel"])?;
    if !same_dir(Path::new(&toplevel), &workspace) {
        return None;
    }
    // Re-run when HEAD moves (a checkout, a commit on the branch) or the
    // index changes (a staged edit): builds stay incremental otherwise.
    // A worktree's HEAD lives in its own git dir, the branches in the
    // common one.
    let git_dir = absolute(&workspace, &git(&workspace, &["rev-parse", "--git-dir"])?);
    let common_dir = absolute(
        &workspace,
        &git(&workspace, &["rev-parse", "--git-common-dir"])?,
    );
    println!("cargo:rerun-if-changed={}", git_dir.join("HEAD").display());
    println!("cargo:rerun-if-changed={}", git_dir.join("index").display());
    if let Some(reference) = git(&workspace, &["symbolic-ref", "-q", "HEAD"]) {
        let loose = common_dir.join(&reference);
        if loose.exists() {
            println!("cargo:rerun-if-changed={}", loose.display());
        }
        println!(
            "cargo:rerun-if-changed={}",
            common_dir.join("packed-refs").display()
        );
    }
    // An edit to the sources the binary is built from may make the tree
    // dirty; those edits rebuild the hub anyway.
    for source in [
        "Cargo.toml",
        "Cargo.lock",
        "hub/src",
        "hub/migrations",
        "domain/src",
        "adapters/src",
        "proto/raccordo",
    ] {
        println!(
            "cargo:rerun-if-changed={}",
            workspace.join(source).display()
        );
    }

    let hash = git(&workspace, &["rev-parse", "--short=12", "HEAD"])?;
    let dirty = git(
        &workspace,
        &["status", "--porcelain", "--untracked-files=no"],
    )
    .is_some_and(|changes| !changes.is_empty());
    Some(if dirty { format!("{hash}+dirty") } else { hash })
}

/// Runs git in `dir` and returns its trimmed output, `None` if it fails.
fn git(dir: &Path, args: &[&str]) -> Option<String> {
    let output = Command::new("git")
        .args(args)
        .current_dir(dir)
        // `git status` must not rewrite the index it is watched through.
        .env("GIT_OPTIONAL_LOCKS", "0")
        .output()
        .ok()?;
    if !output.status.success() {
        return None;
    }
    Some(String::from_utf8(output.stdout).ok()?.trim().to_owned())
}

fn absolute(base: &Path, path: &str) -> PathBuf {
    let path = Path::new(path);
    if path.is_absolute() {
        path.to_path_buf()
    } else {
        base.join(path)
    }
}

fn same_dir(a: &Path, b: &Path) -> bool {
    match (a.canonicalize(), b.canonicalize()) {
        (Ok(a), Ok(b)) => a == b,
        _ => false,
    }
}
