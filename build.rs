//! Compiles proto/ with protox (pure Rust, no system protoc) when the `server`
//! feature is on, and writes the file descriptor set used by gRPC reflection.

fn main() {
    println!("cargo:rerun-if-changed=proto");
    #[cfg(feature = "server")]
    server::compile();
}

#[cfg(feature = "server")]
mod server {
    use std::path::PathBuf;

    pub fn compile() {
        let out = PathBuf::from(std::env::var_os("OUT_DIR").expect("OUT_DIR is set by cargo"));
        let fds = protox::compile(["shredstore/v1/store.proto"], ["proto"])
            .expect("proto/shredstore/v1/store.proto compiles");
        let bytes = protox::prost::Message::encode_to_vec(&fds);
        std::fs::write(out.join("shredstore_descriptor.bin"), bytes).expect("write descriptor set");
        tonic_prost_build::configure()
            .build_client(true)
            .build_server(true)
            .compile_fds(fds)
            .expect("generate gRPC code");
    }
}
