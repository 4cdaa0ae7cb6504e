//! Links the kernel with the x86_64 linker script (and relinks when it changes).

fn main() {
    let dir = std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR");
    let script = format!("{dir}/../arch/x86_64/linker.ld");
    println!("cargo:rerun-if-changed={script}");
    if std::env::var("TARGET").as_deref() == Ok("x86_64-unknown-none") {
        println!("cargo:rustc-link-arg-bins=-T{script}");
        println!("cargo:rustc-link-arg-bins=-zmax-page-size=4096");
        // Feature `alt-link`: the same kernel linked at 16 MiB.
        if std::env::var_os("CARGO_FEATURE_ALT_LINK").is_some() {
            println!("cargo:rustc-link-arg-bins=--defsym=KHO_BASE=0x1000000");
        }
    }
}
