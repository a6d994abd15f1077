//! Records, at build time, what the report says the binaries were built
//! with: the compiler and the peer allocators' versions from `Cargo.lock`.

use std::path::Path;
use std::process::Command;

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
    let version = Command::new(rustc)
        .arg("-V")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|| "unknown rustc".into());
    println!("cargo:rustc-env=RULLOC_BENCH_RUSTC={version}");

    let manifest = std::env::var("CARGO_MANIFEST_DIR").unwrap_or_else(|_| ".".into());
    let lock_path = Path::new(&manifest).join("../Cargo.lock");
    println!("cargo:rerun-if-changed={}", lock_path.display());
    let lock = std::fs::read_to_string(&lock_path).unwrap_or_default();
    for (var, krate) in [
        ("MIMALLOC", "libmimalloc-sys"),
        ("JEMALLOC", "tikv-jemalloc-sys"),
        ("SNMALLOC", "snmalloc-sys"),
    ] {
        let v = locked_version(&lock, krate).unwrap_or_else(|| "?".into());
        println!("cargo:rustc-env=RULLOC_BENCH_VERSION_{var}={krate} {v}");
    }
}

/// The version of `krate` in a `Cargo.lock`.
fn locked_version(lock: &str, krate: &str) -> Option<String> {
    let needle = format!("name = \"{krate}\"");
    let mut lines = lock.lines();
    lines.find(|l| l.trim() == needle)?;
    let v = lines.next()?.trim().strip_prefix("version = \"")?;
    // tikv-jemalloc-sys versions carry the jemalloc version after a `+`.
    let v = v.trim_end_matches('"');
    Some(match v.split_once('+') {
        Some((crate_v, rest)) => {
            let upstream = rest.split('-').next().unwrap_or(rest);
            format!("{crate_v} (upstream {upstream})")
        }
        None => v.to_string(),
    })
}
