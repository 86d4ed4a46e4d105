//! Compiles the XDP programs in bpf/ with clang and generates the libbpf-rs skeleton that
//! embeds `sensor.bpf.c` in the binary (src/capture/xdp.rs includes it from OUT_DIR).
//! `xdp_drop.bpf.c` is only compiled to an object file, for the live tests and the
//! capture benchmark.

use std::env;
use std::path::PathBuf;

use libbpf_cargo::SkeletonBuilder;

fn main() {
    let out_dir = PathBuf::from(env::var_os("OUT_DIR").expect("OUT_DIR is set by cargo"));
    // With -target bpf clang does not search the multiarch include directory, where
    // <asm/types.h> (pulled in by <linux/bpf.h>) lives on Debian.
    let arch = env::var("CARGO_CFG_TARGET_ARCH").unwrap_or_else(|_| "x86_64".into());
    let multiarch = format!("-I/usr/include/{arch}-linux-gnu");
    let args = ["-Ibpf", multiarch.as_str(), "-O2", "-g", "-Wall"];

    SkeletonBuilder::new()
        .source("bpf/sensor.bpf.c")
        .obj(out_dir.join("sensor.bpf.o"))
        .clang_args(args)
        .build_and_generate(out_dir.join("sensor.skel.rs"))
        .expect(
            "compiling bpf/sensor.bpf.c failed; is clang installed? (scripts/deps.sh installs it)",
        );

    SkeletonBuilder::new()
        .source("bpf/xdp_drop.bpf.c")
        .obj(out_dir.join("xdp_drop.bpf.o"))
        .clang_args(args)
        .build()
        .expect("compiling bpf/xdp_drop.bpf.c failed; is clang installed?");

    for f in [
        "bpf/sensor.bpf.c",
        "bpf/shared.h",
        "bpf/xdp_drop.bpf.c",
        "build.rs",
    ] {
        println!("cargo:rerun-if-changed={f}");
    }
}
