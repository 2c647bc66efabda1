//! Link libtorch so that the binary finds it and sees CUDA, and compile the C++ shim (c10d,
//! QLoRA's 4-bit layer, the optimizer's multi-tensor kernels).
//!
//! rustc links with `--as-needed`, which drops `libtorch_cuda` (nothing references it
//! by symbol) and CUDA then silently reports unavailable. torch-sys also sets no rpath
//! on the final binary. torch-sys is a direct dependency so `DEP_TCH_LIBTORCH_LIB` reaches us.
//!
//! The c10d shim (runner/distributed/c10d.cpp, and c10d_nccl.cpp when libtorch has CUDA) is
//! compiled against the torch wheel's headers, Gloo's headers from Debian's libgloo-dev, and,
//! for NCCL, the CUDA and NCCL headers of the wheel's nvidia packages (plus nvidia-cuda-crt and
//! nvidia-cuda-cccl, which ./dev installs). It links only torch's own libraries: libtorch_cpu
//! holds Gloo, libtorch_cuda ProcessGroupNCCL. Overrides: RUNNER_GLOO_INCLUDE,
//! RUNNER_CUDA_INCLUDE, RUNNER_NCCL_INCLUDE (folders holding gloo/, cuda_runtime_api.h, nccl.h).

use std::path::{Path, PathBuf};

const SHIM: &str = "runner/distributed/c10d.cpp";
const SHIM_NCCL: &str = "runner/distributed/c10d_nccl.cpp";
/// QLoRA's 4-bit linear layer: a torch::autograd::Function that dequantises in backward.
const LINEAR_4BIT: &str = "runner/models/linear_4bit.cpp";
/// The optimizer's multi-tensor kernels: fused AdamW, the gradients' norm and scaling.
const OPTIMIZER: &str = "runner/train/optimizer.cpp";
/// The shim's error convention: shim.h, included by the files above, and its one function.
const SHIM_ERRORS: [&str; 2] = ["runner/shim.h", "runner/shim.cpp"];

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-changed={SHIM}");
    println!("cargo:rerun-if-changed={SHIM_NCCL}");
    println!("cargo:rerun-if-changed={LINEAR_4BIT}");
    println!("cargo:rerun-if-changed={OPTIMIZER}");
    for file in SHIM_ERRORS {
        println!("cargo:rerun-if-changed={file}");
    }
    for var in [
        "RUNNER_GLOO_INCLUDE",
        "RUNNER_CUDA_INCLUDE",
        "RUNNER_NCCL_INCLUDE",
    ] {
        println!("cargo:rerun-if-env-changed={var}");
    }
    let Ok(lib) = std::env::var("DEP_TCH_LIBTORCH_LIB") else {
        panic!("DEP_TCH_LIBTORCH_LIB is unset: build through ./dev so libtorch is found");
    };
    let cuda = Path::new(&lib).join("libtorch_cuda.so").exists();

    compile_shim(Path::new(&lib), cuda);

    println!("cargo:rustc-link-search=native={lib}");
    // After the shim's static library, so that its references resolve against them.
    println!("cargo:rustc-link-lib=dylib=torch_cpu");
    println!("cargo:rustc-link-lib=dylib=c10");
    println!("cargo:rustc-link-arg=-Wl,-rpath,{lib}");
    if cuda {
        println!("cargo:rustc-link-arg=-Wl,--no-as-needed");
        println!("cargo:rustc-link-arg=-ltorch_cuda");
        println!("cargo:rustc-link-arg=-lc10_cuda");
        println!("cargo:rustc-link-arg=-ltorch");
        println!("cargo:rustc-link-arg=-Wl,--as-needed");
    }
}

/// Five translation units at most, compiled in parallel (cc's `parallel` feature): c10d.cpp
/// (stores, Gloo, the C ABI), linear_4bit.cpp (QLoRA's layer), optimizer.cpp (fused AdamW),
/// shim.cpp (freeing the shim's messages) and, with CUDA, c10d_nccl.cpp (ProcessGroupNCCL's
/// constructor).
fn compile_shim(lib: &Path, cuda: bool) {
    let torch = lib
        .parent()
        .expect("DEP_TCH_LIBTORCH_LIB has no parent folder");
    let include = torch.join("include");
    if !include
        .join("torch/csrc/distributed/c10d/ProcessGroupGloo.hpp")
        .is_file()
    {
        panic!(
            "{} lacks torch's c10d headers (torch/csrc/distributed/c10d/): build against the \
             PyPI torch wheel that ./dev installs into .venv",
            include.display()
        );
    }
    let out = PathBuf::from(std::env::var("OUT_DIR").expect("cargo sets OUT_DIR"));
    let gloo = gloo_include();

    let mut build = cc::Build::new();
    build
        .cpp(true)
        .pic(true)
        .opt_level(2)
        .debug(false)
        .warnings(false)
        .flag("-w") // torch's headers are noisy; the shim is small
        .flag("-std=c++17")
        .define("_GLIBCXX_USE_CXX11_ABI", "1")
        .define("GLOG_USE_GLOG_EXPORT", None)
        .define("USE_C10D_GLOO", None)
        // Searched before Gloo's own folder: a gloo/config.h with what torch's headers expect.
        .include(gloo_config(&out, &gloo))
        .include(&include)
        .include(include.join("torch/csrc/api/include"))
        .file(SHIM)
        .file(LINEAR_4BIT)
        .file(OPTIMIZER)
        .file(SHIM_ERRORS[1]);
    if gloo != Path::new("/usr/include") {
        // (GCC ignores -I/usr/include; it is searched anyway, after the folders above.)
        build.include(&gloo);
    }
    if cuda {
        let (cuda_include, nccl_include) = cuda_includes(torch);
        build
            .include(cuda_include)
            .include(nccl_include)
            .define("RUNNER_C10D_NCCL", None)
            // GCC 12 warns that std::hardware_destructive_interference_size may vary.
            .flag_if_supported("--param=destructive-interference-size=64")
            .file(SHIM_NCCL);
    }
    build.compile("runner_c10d");
}

/// The folder holding Gloo's headers (gloo/allreduce.h ...): Debian's libgloo-dev puts them in
/// /usr/include.
fn gloo_include() -> PathBuf {
    let candidates = std::env::var_os("RUNNER_GLOO_INCLUDE")
        .map(PathBuf::from)
        .into_iter()
        .chain(["/usr/include", "/usr/local/include"].map(PathBuf::from));
    for dir in candidates {
        if dir.join("gloo/allreduce.h").is_file() && dir.join("gloo/config.h").is_file() {
            println!(
                "cargo:rerun-if-changed={}",
                dir.join("gloo/config.h").display()
            );
            return dir;
        }
    }
    panic!(
        "Gloo's headers (gloo/allreduce.h) are missing: run ./dev, which installs Debian's \
         libgloo-dev, or set RUNNER_GLOO_INCLUDE to a folder holding gloo/"
    );
}

/// A gloo/config.h in OUT_DIR: the installed one plus what torch's build defines and a 2022
/// snapshot (Debian's) lacks. Returns the folder to put first on the include path.
fn gloo_config(out: &Path, gloo: &Path) -> PathBuf {
    let installed = gloo.join("gloo/config.h");
    let mut text = std::fs::read_to_string(&installed)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", installed.display()));
    text.push_str("\n// Added by runner's build.rs: torch's own Gloo build defines these.\n");
    for name in ["GLOO_USE_TORCH_DTYPES", "GLOO_HAVE_TRANSPORT_TCP"] {
        text.push_str(&format!("#ifndef {name}\n#define {name} 1\n#endif\n"));
    }
    let dir = out.join("gloo-config");
    std::fs::create_dir_all(dir.join("gloo")).expect("cannot create OUT_DIR/gloo-config/gloo");
    std::fs::write(dir.join("gloo/config.h"), text).expect("cannot write the gloo/config.h");
    dir
}

/// CUDA's and NCCL's include folders for ProcessGroupNCCL.hpp: by default those of the wheel's
/// nvidia packages, next to torch in site-packages (DEP_TCH_LIBTORCH_LIB is
/// `<site-packages>/torch/lib`).
fn cuda_includes(torch: &Path) -> (PathBuf, PathBuf) {
    let site = torch.parent().expect("torch's folder has no parent");
    let cuda = std::env::var_os("RUNNER_CUDA_INCLUDE")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            // nvidia/cu13/include for CUDA 13 wheels; any nvidia/cu*/include holding the runtime.
            let mut found: Vec<PathBuf> = std::fs::read_dir(site.join("nvidia"))
                .into_iter()
                .flatten()
                .flatten()
                .map(|entry| entry.path().join("include"))
                .filter(|dir| {
                    dir.parent()
                        .and_then(|p| p.file_name())
                        .and_then(|n| n.to_str())
                        .is_some_and(|n| n.starts_with("cu"))
                        && dir.join("cuda_runtime_api.h").is_file()
                })
                .collect();
            found.sort();
            found
                .pop()
                .unwrap_or_else(|| site.join("nvidia/cu13/include"))
        });
    let nccl = std::env::var_os("RUNNER_NCCL_INCLUDE")
        .map(PathBuf::from)
        .unwrap_or_else(|| site.join("nvidia/nccl/include"));
    let needed = [
        (
            cuda.join("cuda_runtime_api.h"),
            "the wheel's CUDA runtime headers (nvidia-cuda-runtime)",
        ),
        (cuda.join("crt/host_config.h"), "PyPI's nvidia-cuda-crt"),
        (cuda.join("nv/target"), "PyPI's nvidia-cuda-cccl"),
        (
            nccl.join("nccl.h"),
            "the wheel's NCCL headers (nvidia-nccl)",
        ),
    ];
    let missing: Vec<String> = needed
        .iter()
        .filter(|(path, _)| !path.is_file())
        .map(|(path, from)| format!("{} (from {from})", path.display()))
        .collect();
    if !missing.is_empty() {
        panic!(
            "libtorch has CUDA, so the c10d shim's NCCL part needs CUDA's and NCCL's headers, and \
             these are missing:\n  {}\nRun ./dev (it pip-installs nvidia-cuda-crt and \
             nvidia-cuda-cccl into .venv), or set RUNNER_CUDA_INCLUDE / RUNNER_NCCL_INCLUDE.",
            missing.join("\n  ")
        );
    }
    for path in needed.iter().map(|(path, _)| path) {
        println!("cargo:rerun-if-changed={}", path.display());
    }
    (cuda, nccl)
}
