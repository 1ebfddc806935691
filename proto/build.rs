//! Compiles `raccordo/v1/*.proto` with protox (pure Rust): no system `protoc`.
use prost::Message;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protos = ["raccordo/v1/practice.proto"];
    println!("cargo:rerun-if-changed=raccordo");
    let fds = protox::compile(protos, ["."])?;
    let out = std::path::PathBuf::from(std::env::var("OUT_DIR")?);
    // Reflection needs the encoded descriptor set; compile_fds does not write one.
    std::fs::write(out.join("raccordo_descriptor.bin"), fds.encode_to_vec())?;
    tonic_prost_build::configure()
        .build_server(true)
        .build_client(true)
        .compile_fds(fds)?;
    Ok(())
}
