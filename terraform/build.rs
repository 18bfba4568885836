//! Generates the tonic/prost code for the Terraform plugin protocol and
//! go-plugin's services with a vendored protoc, as `meridian-proto` does.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protoc = protoc_bin_vendored::protoc_bin_path()?;
    std::env::set_var("PROTOC", protoc);
    let protos = ["proto/tfplugin6.proto", "proto/plugin/go_plugin.proto"];
    tonic_prost_build::configure()
        .build_client(false)
        .generate_default_stubs(true)
        .compile_protos(&protos, &["proto"])?;
    for proto in protos {
        println!("cargo:rerun-if-changed={proto}");
    }
    Ok(())
}
