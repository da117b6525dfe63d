//! Compiles `proto/grpc_predict_v2.proto` (the Open Inference Protocol's gRPC service) into
//! Rust with a pure-Rust protobuf compiler: no `protoc` on the machine, no network.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto/grpc_predict_v2.proto");
    let descriptors = protox::compile(["grpc_predict_v2.proto"], ["proto"])?;
    tonic_prost_build::configure().build_server(true).build_client(true).compile_fds(descriptors)?;
    Ok(())
}
