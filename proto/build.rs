fn main() -> Result<(), Box<dyn std::error::Error>> {
    // Use protoc from PATH when present, the vendored one otherwise, so a fresh
    // machine needs no system package for it.
    if std::env::var_os("PROTOC").is_none() {
        let protoc = protoc_bin_vendored::protoc_bin_path()?;
        std::env::set_var("PROTOC", protoc);
    }
    // The descriptor set feeds gRPC server reflection (grpcurl list/describe).
    let descriptors = std::path::PathBuf::from(std::env::var("OUT_DIR")?).join("tessera_descriptor.bin");
    tonic_prost_build::configure()
        .file_descriptor_set_path(descriptors)
        .compile_protos(&["proto/tessera/v1/tessera.proto", "proto/tessera/shard/v1/shard.proto"], &["proto"])?;
    println!("cargo:rerun-if-changed=proto");
    Ok(())
}
