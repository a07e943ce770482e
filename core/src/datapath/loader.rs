//! Loading the embedded object once per host and pinning its programs and the maps
//! user space needs.

use std::path::Path;

use aya::EbpfLoader;
use aya::programs::{CgroupSkb, SockOps};

use crate::datapath::links::PROGS;
use crate::datapath::pins::remove_tree;
use crate::datapath::{DatapathError, abi, io_err};

/// Loads the programs and pins them with the maps at `dir`. Pins are written to a
/// temporary directory and renamed into place, so a crash never leaves a
/// half-pinned datapath that would later be mistaken for a whole one.
pub fn load_and_pin(dir: &Path) -> Result<(), DatapathError> {
    // bpffs refuses names with a dot in them.
    let tmp = dir.with_file_name(format!("v{}_loading", abi::ABI_VERSION));
    let _ = remove_tree(&tmp);
    std::fs::create_dir_all(&tmp).map_err(io_err("creating", &tmp))?;
    let r = (|| {
        let mut ebpf = EbpfLoader::new()
            .load(abi::BPF_OBJECT)
            .map_err(|e| load_error(format!("{e:#}")))?;
        let senders = (abi::PROG_SENDERS, abi::PIN_SENDERS, true);
        let all = PROGS.iter().map(|p| (p.name, p.pin, p.sockops));
        for (name, pin, sockops) in all.chain([senders]) {
            let prog = ebpf
                .program_mut(name)
                .ok_or_else(|| load_error(format!("program {} missing", name)))?;
            let pin = tmp.join(pin);
            // Loading needs the typed program; pinning works on any.
            let loaded = if sockops {
                let t: &mut SockOps = (&mut *prog)
                    .try_into()
                    .map_err(|e| load_error(format!("{}: {e}", name)))?;
                t.load()
            } else {
                let t: &mut CgroupSkb = (&mut *prog)
                    .try_into()
                    .map_err(|e| load_error(format!("{}: {e}", name)))?;
                t.load()
            };
            loaded.map_err(|e| load_error(format!("{}: {}", name, verifier_detail(&e))))?;
            prog.pin(&pin)
                .map_err(|e| load_error(format!("pinning {}: {e}", name)))?;
        }
        for (map, pin) in abi::PINNED_MAPS {
            let m = ebpf
                .map(map)
                .ok_or_else(|| load_error(format!("map {map} missing")))?;
            m.pin(tmp.join(pin))
                .map_err(|e| load_error(format!("pinning {map}: {e}")))?;
        }
        std::fs::create_dir_all(tmp.join("links")).map_err(io_err("creating", &tmp))?;
        Ok(())
    })();
    if let Err(e) = r {
        let _ = remove_tree(&tmp);
        return Err(e);
    }
    // bpffs supports rename of directories within the same mount.
    if dir.exists() {
        let _ = remove_tree(dir);
    }
    std::fs::rename(&tmp, dir).map_err(io_err("renaming into place", dir))
}

fn load_error(s: String) -> DatapathError {
    let low = s.to_lowercase();
    if low.contains("invalid argument") && low.contains("map") {
        return DatapathError::MissingKernelFeature {
            what: "a map type the datapath uses".into(),
            detail: s,
        };
    }
    DatapathError::Load(s)
}

fn verifier_detail(e: &aya::programs::ProgramError) -> String {
    match e {
        aya::programs::ProgramError::LoadError {
            io_error,
            verifier_log,
        } => {
            let log = verifier_log.to_string();
            let tail: Vec<&str> = log.lines().rev().take(8).collect();
            format!(
                "{io_error}; verifier: {}",
                tail.into_iter().rev().collect::<Vec<_>>().join(" | ")
            )
        }
        other => format!("{other}"),
    }
}
