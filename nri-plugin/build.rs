//! Generates the NRI protocol code (messages and ttrpc services) from our own
//! subset of the NRI proto at build time.

use std::env;
use std::path::{Path, PathBuf};

fn main() {
    let manifest = PathBuf::from(env::var("CARGO_MANIFEST_DIR").unwrap());
    let out = PathBuf::from(env::var("OUT_DIR").unwrap());
    generate_nri(&manifest, &out);
}

/// Generates the NRI messages (rust-protobuf) and ttrpc services (async) from our own
/// subset of the NRI proto. The pure-Rust parser is used, so no protoc is needed.
fn generate_nri(manifest: &Path, out: &Path) {
    let proto_dir = manifest.join("proto");
    println!(
        "cargo:rerun-if-changed={}",
        proto_dir.join("nri.proto").display()
    );
    let gen_dir = out.join("nri-gen");
    std::fs::create_dir_all(&gen_dir).unwrap();
    ttrpc_codegen::Codegen::new()
        .out_dir(&gen_dir)
        .inputs([proto_dir.join("nri.proto")])
        .include(&proto_dir)
        .rust_protobuf()
        .customize(ttrpc_codegen::Customize {
            async_all: true,
            ..Default::default()
        })
        .run()
        .expect("generating NRI protocol code from nri-plugin/proto/nri.proto");
    // The generated files carry inner attributes, which `include!` inside a module
    // does not allow; the including module sets the lints instead.
    for name in ["nri.rs", "nri_ttrpc.rs"] {
        let text = std::fs::read_to_string(gen_dir.join(name)).unwrap();
        let cleaned: String = text
            .lines()
            .filter(|l| !l.trim_start().starts_with("#![") && !l.trim_start().starts_with("//!"))
            .map(|l| format!("{l}\n"))
            .collect();
        std::fs::write(out.join(name), cleaned).unwrap();
    }
}
