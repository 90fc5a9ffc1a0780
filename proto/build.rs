//! Compiles `lcpfs/v1/*.proto` with protox (a pure-Rust protobuf compiler), so a fresh
//! machine needs no system `protoc`.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protos = ["lcpfs/v1/mon.proto", "lcpfs/v1/osd.proto"];
    for proto in protos {
        println!("cargo:rerun-if-changed={proto}");
    }
    let descriptors = protox::compile(protos, ["."])?;
    tonic_prost_build::configure().compile_fds(descriptors)?;
    Ok(())
}
