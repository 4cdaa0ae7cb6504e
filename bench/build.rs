//! Links libfdt (Debian `libfdt-dev`) when it is installed, so the benchmark
//! can measure the C reference implementation in the same run.

fn main() {
    println!("cargo::rustc-check-cfg=cfg(has_libfdt)");
    println!("cargo:rerun-if-changed=build.rs");
    for dir in [
        "/usr/lib/x86_64-linux-gnu",
        "/usr/lib64",
        "/usr/lib",
        "/usr/local/lib",
    ] {
        if std::path::Path::new(&format!("{dir}/libfdt.a")).exists() {
            println!("cargo:rustc-link-search=native={dir}");
            println!("cargo:rustc-link-lib=static=fdt");
            println!("cargo:rustc-cfg=has_libfdt");
            return;
        }
    }
    println!(
        "cargo:warning=libfdt.a not found (apt-get install libfdt-dev): libfdt is left out of the FDT benchmark"
    );
}
