//! `runner doctor`: what this machine offers the runner: libtorch, CUDA, devices, bf16, threads,
//! and where METEOR's data (WordNet, Punkt) is.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;

use tch::{Cuda, Device, Kind, Tensor};

use super::{INVALID, OK};

/// The libtorch version the binary was built against (tch pins it exactly).
pub const LIBTORCH_VERSION: &str = "2.11.0";

pub fn run(out: &mut dyn Write) -> std::io::Result<i32> {
    writeln!(out, "runner {}", env!("CARGO_PKG_VERSION"))?;
    // Any call loads libtorch, so its path shows in /proc/self/maps.
    let threads = tch::get_num_threads();
    match loaded_libtorch() {
        Some((dir, version)) => writeln!(
            out,
            "libtorch        {version} from {} (built for {LIBTORCH_VERSION}, tch 0.24)",
            dir.display()
        )?,
        None => writeln!(out, "libtorch        built for {LIBTORCH_VERSION} (tch 0.24); the loaded library was not found")?,
    }
    writeln!(
        out,
        "threads         {} intra-op, {} inter-op",
        threads,
        tch::get_num_interop_threads()
    )?;
    let cuda = Cuda::is_available();
    writeln!(
        out,
        "cuda            {}",
        if cuda { "available" } else { "not available" }
    )?;
    writeln!(
        out,
        "cudnn           {}",
        if Cuda::cudnn_is_available() {
            "available"
        } else {
            "not available"
        }
    )?;
    writeln!(
        out,
        "c10d            gloo (CPU){}",
        match crate::distributed::c10d::has_nccl() {
            true => ", nccl (CUDA)",
            false => "; no nccl (this libtorch has no CUDA)",
        }
    )?;
    let names = gpu_names();
    for i in 0..Cuda::device_count() {
        let name = names
            .get(i as usize)
            .map_or("unknown (nvidia-smi not found)", String::as_str);
        writeln!(out, "device cuda:{i}  {name}")?;
    }
    let mut devices = vec![Device::Cpu];
    if cuda {
        devices.push(Device::Cuda(0));
    }
    let mut healthy = true;
    for device in devices {
        let works = bf16_works(device);
        healthy &= works.is_ok();
        let status = works.map_or_else(|e| format!("fails: {e}"), |()| "supported".to_string());
        writeln!(out, "{:<16}{status}", format!("bf16 on {device:?}"))?;
    }
    // METEOR's data; a missing piece only matters to recipes that score METEOR.
    let found = |dir: anyhow::Result<PathBuf>| {
        dir.map_or_else(
            |e| {
                format!(
                    "not found (METEOR needs it): {}",
                    e.to_string().replace('\n', " ")
                )
            },
            |d| d.display().to_string(),
        )
    };
    writeln!(
        out,
        "wordnet         {}",
        found(crate::eval::nltk_data::wordnet_dir())
    )?;
    writeln!(
        out,
        "punkt_tab       {}",
        found(crate::eval::nltk_data::punkt_dir())
    )?;
    Ok(if healthy { OK } else { INVALID })
}

/// A bf16 matrix multiply on `device` that matches fp32 to bf16 accuracy.
fn bf16_works(device: Device) -> Result<(), String> {
    let a = Tensor::f_ones([64, 64], (Kind::Float, device)).map_err(|e| e.to_string())?;
    let product = a
        .f_to_kind(Kind::BFloat16)
        .and_then(|b| b.f_matmul(&b))
        .map_err(|e| e.to_string())?;
    let value = product
        .f_to_kind(Kind::Float)
        .and_then(|p| p.f_mean(Kind::Float))
        .map_err(|e| e.to_string())?;
    let value = f64::try_from(value).map_err(|e| e.to_string())?;
    if (value - 64.0).abs() < 0.5 {
        Ok(())
    } else {
        Err(format!("64x64 ones squared gave {value}, expected 64"))
    }
}

/// The folder of the libtorch this process loaded, and the version of the torch package it belongs to.
fn loaded_libtorch() -> Option<(PathBuf, String)> {
    let maps = fs::read_to_string("/proc/self/maps").ok()?;
    let lib = maps
        .lines()
        .filter_map(|l| l.split_whitespace().nth(5))
        .find(|p| p.ends_with("/libtorch_cpu.so"))?;
    let dir = Path::new(lib).parent()?.to_path_buf();
    let version_file = fs::read_to_string(dir.join("../version.py")).ok()?;
    let line = version_file
        .lines()
        .find(|l| l.starts_with("__version__"))?;
    let version = line.split(['\'', '"']).nth(1)?.to_string();
    Some((dir, version))
}

/// GPU names from nvidia-smi (libtorch's device properties are not bound by tch).
fn gpu_names() -> Vec<String> {
    Command::new("nvidia-smi")
        .args(["--query-gpu=name", "--format=csv,noheader"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| {
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .map(str::trim)
                .map(String::from)
                .collect()
        })
        .unwrap_or_default()
}
