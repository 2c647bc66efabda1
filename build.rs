//! Link libtorch so that the binary finds it and sees CUDA.
//!
//! rustc links with `--as-needed`, which drops `libtorch_cuda` (nothing references it
//! by symbol) and CUDA then silently reports unavailable. torch-sys also sets no rpath
//! on the final binary. torch-sys is a direct dependency so `DEP_TCH_LIBTORCH_LIB` reaches us.

use std::path::Path;

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    let Ok(lib) = std::env::var("DEP_TCH_LIBTORCH_LIB") else {
        println!(
            "cargo:warning=DEP_TCH_LIBTORCH_LIB is unset: build through ./dev so libtorch is found"
        );
        return;
    };
    println!("cargo:rustc-link-search=native={lib}");
    println!("cargo:rustc-link-arg=-Wl,-rpath,{lib}");
    if Path::new(&lib).join("libtorch_cuda.so").exists() {
        println!("cargo:rustc-link-arg=-Wl,--no-as-needed");
        println!("cargo:rustc-link-arg=-ltorch_cuda");
        println!("cargo:rustc-link-arg=-ltorch");
        println!("cargo:rustc-link-arg=-Wl,--as-needed");
    }
}
