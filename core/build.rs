//! Builds the kernel half (ebpf/*.bpf.c) with clang so the binaries embed the exact
//! object they were compiled with, and extracts the C struct layouts so a test can
//! hold the Rust mirrors to them.

use std::env;
use std::path::{Path, PathBuf};
use std::process::Command;

fn main() {
    let manifest = PathBuf::from(env::var("CARGO_MANIFEST_DIR").unwrap());
    let ebpf = manifest.join("../ebpf");
    let out = PathBuf::from(env::var("OUT_DIR").unwrap());
    let clang = env::var("CLANG").unwrap_or_else(|_| "clang".to_string());

    for f in ["bw.bpf.c", "bw_maps.h", "bw_layout.c"] {
        println!("cargo:rerun-if-changed={}", ebpf.join(f).display());
    }
    println!("cargo:rerun-if-env-changed=CLANG");

    let arch_include = multiarch_include();
    check_header("linux/bpf.h", &arch_include, "linux-libc-dev");
    check_header("bpf/bpf_helpers.h", &arch_include, "libbpf-dev");

    let obj = out.join("bw.bpf.o");
    let mut cmd = Command::new(&clang);
    cmd.args([
        "-O2", "-g", "-target", "bpf", "-mcpu=v3", "-Wall", "-Werror",
    ]);
    if let Some(dir) = &arch_include {
        // Debian keeps asm/types.h under the multiarch directory, which -target bpf
        // does not search.
        cmd.arg(format!("-I{}", dir.display()));
    }
    cmd.arg("-c").arg(ebpf.join("bw.bpf.c")).arg("-o").arg(&obj);
    run(cmd, &clang, "building ebpf/bw.bpf.c");

    // The layout probe is a host program: it prints the sizes and offsets of the
    // shared structs as Rust constants.
    let probe = out.join("bw_layout");
    let mut cmd = Command::new(&clang);
    cmd.arg("-O0")
        .arg(ebpf.join("bw_layout.c"))
        .arg("-o")
        .arg(&probe);
    run(cmd, &clang, "building ebpf/bw_layout.c");
    let output = Command::new(&probe)
        .output()
        .unwrap_or_else(|e| panic!("running {}: {e}", probe.display()));
    assert!(output.status.success(), "bw_layout failed");
    // C names keep their case in the probe's output; Rust constants are upper case.
    let text = String::from_utf8(output.stdout).unwrap();
    let rust: String = text
        .lines()
        .map(|l| match l.split_once(':') {
            Some((name, rest)) => format!(
                "{}:{rest}\n",
                name.to_uppercase().replace("PUB CONST", "pub const")
            ),
            None => format!("{l}\n"),
        })
        .collect();
    std::fs::write(out.join("bw_layout.rs"), rust).unwrap();
}

fn multiarch_include() -> Option<PathBuf> {
    let triple = Command::new("gcc")
        .arg("-print-multiarch")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| format!("{}-linux-gnu", env::consts::ARCH));
    let dir = PathBuf::from("/usr/include").join(triple);
    dir.is_dir().then_some(dir)
}

fn check_header(header: &str, arch: &Option<PathBuf>, package: &str) {
    let found = Path::new("/usr/include").join(header).exists()
        || arch.as_ref().is_some_and(|d| d.join(header).exists());
    if !found {
        panic!(
            "\n\nnri-bandwidth: the header <{header}> is missing; it is needed to build the eBPF \
             programs.\nInstall it with: apt-get install {package}   (or run `make deps`)\n\n"
        );
    }
}

fn run(mut cmd: Command, clang: &str, what: &str) {
    match cmd.status() {
        Ok(s) if s.success() => {}
        Ok(s) => panic!("\n\nnri-bandwidth: {what} failed ({s}); command: {cmd:?}\n\n"),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => panic!(
            "\n\nnri-bandwidth: `{clang}` was not found; it compiles the eBPF programs.\n\
             Install it with: apt-get install clang libbpf-dev linux-libc-dev   (or run `make deps`),\n\
             or point the CLANG environment variable at a clang >= 14.\n\n"
        ),
        Err(e) => panic!("\n\nnri-bandwidth: {what}: cannot run {clang}: {e}\n\n"),
    }
}
