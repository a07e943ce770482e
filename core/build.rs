//! Builds the kernel half (ebpf/bw.bpf.c) with clang so the binaries embed the exact
//! objects they were compiled with, and generates every Rust view of a C layout with
//! bindgen, so no layout is written twice:
//!
//! * `bw.bpf.o`       the production object (loaded by datapath/loader.rs)
//! * `bw_test.bpf.o`  the same source with -DBW_TEST: adds the state array and the
//!   empty baseline program that BPF_PROG_TEST_RUN needs (testkit only)
//! * `bw_maps.rs`     `ebpf/bw_maps.h`: the shared structs and `BW_*` constants
//! * `bpf_uapi.rs`    the parts of `<linux/bpf.h>` that datapath/sys.rs and the test
//!   rig fill in: `union bpf_attr`, the info structs, `struct __sk_buff`
//! * `bw_object.rs`   the programs and maps (with key and value sizes) that the two
//!   objects define, as aya-obj parses them, for the tests in datapath/abi.rs

use std::env;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;

fn main() {
    let manifest = PathBuf::from(env::var("CARGO_MANIFEST_DIR").unwrap());
    let ebpf = manifest.join("../ebpf");
    let out = PathBuf::from(env::var("OUT_DIR").unwrap());
    let clang = env::var("CLANG").unwrap_or_else(|_| "clang".to_string());

    // The whole directory: the object is bw.bpf.c with the headers it includes.
    println!("cargo:rerun-if-changed={}", ebpf.display());
    println!("cargo:rerun-if-env-changed=CLANG");

    let arch_include = multiarch_include();
    check_header("linux/bpf.h", &arch_include, "linux-libc-dev");
    check_header("bpf/bpf_helpers.h", &arch_include, "libbpf-dev");

    let prod = out.join("bw.bpf.o");
    let test = out.join("bw_test.bpf.o");
    compile_bpf(&clang, &ebpf, &arch_include, &prod, &[]);
    compile_bpf(&clang, &ebpf, &arch_include, &test, &["-DBW_TEST"]);

    check_libclang();
    generate_bw_maps(&ebpf, &arch_include, &out);
    generate_uapi(&arch_include, &out);
    describe_objects(&[("production", &prod), ("test", &test)], &out);
}

fn compile_bpf(clang: &str, ebpf: &Path, arch: &Option<PathBuf>, obj: &Path, defines: &[&str]) {
    let mut cmd = Command::new(clang);
    cmd.args([
        "-O2", "-g", "-target", "bpf", "-mcpu=v3", "-Wall", "-Werror",
    ]);
    cmd.args(defines);
    if let Some(dir) = arch {
        // Debian keeps asm/types.h under the multiarch directory, which -target bpf
        // does not search.
        cmd.arg(format!("-I{}", dir.display()));
    }
    cmd.arg("-c").arg(ebpf.join("bw.bpf.c")).arg("-o").arg(obj);
    let what = format!("building ebpf/bw.bpf.c {}", defines.join(" "));
    run(cmd, clang, what.trim_end());
}

/// bindgen loads libclang at run time (clang-sys, `runtime` feature). Debian's clang
/// package depends on libclang1-14, whose library clang-sys finds through
/// llvm-config or /usr/lib/llvm-*/lib; LIBCLANG_PATH overrides the search.
fn check_libclang() {
    println!("cargo:rerun-if-env-changed=LIBCLANG_PATH");
    if let Err(e) = clang_sys_probe() {
        panic!(
            "\n\nnri-bandwidth: libclang was not found ({e}); bindgen needs it to generate \
             the Rust mirrors of ebpf/bw_maps.h and <linux/bpf.h>.\n\
             Install it with: apt-get install clang   (it depends on libclang1-<version>; \
             `make deps` installs it) or apt-get install libclang-dev,\n\
             or point LIBCLANG_PATH at the directory holding libclang.so*.\n\n"
        );
    }
}

fn clang_sys_probe() -> Result<(), String> {
    // bindgen panics deep inside when it cannot load libclang (its own message goes
    // to stderr first); ask once up front so the build fails with advice instead.
    match std::panic::catch_unwind(bindgen::clang_version) {
        Ok(v) if v.parsed.is_some() => Ok(()),
        Ok(v) => Err(format!("unexpected version string {:?}", v.full)),
        Err(_) => Err("bindgen could not load it".to_string()),
    }
}

fn builder(arch: &Option<PathBuf>) -> bindgen::Builder {
    let mut b = bindgen::Builder::default()
        .use_core()
        .layout_tests(true)
        .derive_default(true)
        .derive_debug(true)
        .derive_copy(true)
        .derive_eq(true)
        .derive_partialeq(true)
        .generate_comments(true)
        .parse_callbacks(Box::new(bindgen::CargoCallbacks::new()));
    if let Some(dir) = arch {
        b = b.clang_arg(format!("-I{}", dir.display()));
    }
    b
}

fn generate_bw_maps(ebpf: &Path, arch: &Option<PathBuf>, out: &Path) {
    builder(arch)
        .header(ebpf.join("bw_maps.h").display().to_string())
        .allowlist_type("bw_.*")
        .allowlist_var("BW_.*")
        .generate()
        .unwrap_or_else(|e| panic!("\n\nnri-bandwidth: bindgen on ebpf/bw_maps.h: {e}\n\n"))
        .write_to_file(out.join("bw_maps.rs"))
        .unwrap();
}

fn generate_uapi(arch: &Option<PathBuf>, out: &Path) {
    builder(arch)
        .header_contents("bpf_uapi.h", "#include <linux/bpf.h>\n")
        .allowlist_type("bpf_attr|bpf_map_info|bpf_prog_info|bpf_link_info|__sk_buff")
        .allowlist_var("BPF_ANY|BPF_NOEXIST|BPF_EXIST")
        // Plain u32 constants: the kernel takes them as integers in bpf_attr.
        .constified_enum("bpf_cmd|bpf_attach_type|bpf_map_type")
        .allowlist_type("bpf_cmd|bpf_attach_type|bpf_map_type")
        .prepend_enum_name(false)
        .generate()
        .unwrap_or_else(|e| panic!("\n\nnri-bandwidth: bindgen on <linux/bpf.h>: {e}\n\n"))
        .write_to_file(out.join("bpf_uapi.rs"))
        .unwrap();
}

/// What aya's own parser sees in each object: the tests in abi.rs hold the names
/// and sizes user space relies on to it.
fn describe_objects(objs: &[(&str, &Path)], out: &Path) {
    let mut rs = String::new();
    for (module, path) in objs {
        let data = std::fs::read(path).unwrap();
        let obj = aya_obj::Object::parse(&data)
            .unwrap_or_else(|e| panic!("parsing {}: {e}", path.display()));
        let mut progs: Vec<&String> = obj.programs.keys().collect();
        progs.sort();
        let mut maps: Vec<(&String, u32, u32)> = obj
            .maps
            .iter()
            .map(|(n, m)| (n, m.key_size(), m.value_size()))
            .collect();
        maps.sort();
        writeln!(rs, "pub mod {module} {{").unwrap();
        writeln!(rs, "    pub const PROGRAMS: &[&str] = &{progs:?};").unwrap();
        writeln!(
            rs,
            "    /// (name, key size, value size)\n    pub const MAPS: &[(&str, u32, u32)] = &{maps:?};"
        )
        .unwrap();
        writeln!(rs, "}}").unwrap();
    }
    std::fs::write(out.join("bw_object.rs"), rs).unwrap();
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
