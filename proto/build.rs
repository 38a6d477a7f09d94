//! Compiles the SkyWalking v3 protos with the protoc shipped in `protoc-bin-vendored`, so no
//! system protoc is needed.

use std::path::PathBuf;

const PROTOS: &[&str] = &[
    "skywalking/v3/Common.proto",
    "skywalking/v3/Command.proto",
    "skywalking/v3/Tracing.proto",
    "skywalking/v3/Management.proto",
    "skywalking/v3/Meter.proto",
    "skywalking/v3/Logging.proto",
];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protoc = protoc_bin_vendored::protoc_bin_path()
        .map_err(|e| format!("no vendored protoc for this host: {e}"))?;
    let root = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR")?);
    let protos: Vec<PathBuf> = PROTOS.iter().map(|p| root.join(p)).collect();

    let mut config = tonic_prost_build::Config::new();
    config.protoc_executable(protoc);
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .compile_with_config(config, &protos, &[root])?;
    Ok(())
}
