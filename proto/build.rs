//! Generates the tonic/prost code for Meridian's protocols with a vendored protoc.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protoc = protoc_bin_vendored::protoc_bin_path()?;
    std::env::set_var("PROTOC", protoc);
    let out_dir = std::path::PathBuf::from(std::env::var("OUT_DIR")?);
    let protos = [
        "proto/meridian/v1/admin.proto",
        "proto/meridian/v1/certificates.proto",
        "proto/meridian/v1/federation.proto",
        "proto/meridian/v1/raft.proto",
    ];
    tonic_prost_build::configure()
        .file_descriptor_set_path(out_dir.join("meridian_descriptor.bin"))
        .compile_protos(&protos, &["proto"])?;
    for proto in protos {
        println!("cargo:rerun-if-changed={proto}");
    }
    Ok(())
}
