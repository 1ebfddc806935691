//! Types and gRPC stubs generated from `proto/raccordo/v1/*.proto`.
//!
//! The `.proto` files are the contract with front offices; this crate only
//! compiles them (with protox, no system `protoc`) and exposes the descriptor
//! set that server reflection serves.

#![forbid(unsafe_code)]
#![allow(clippy::all, missing_docs)]

/// The `raccordo.v1` package.
pub mod v1 {
    tonic::include_proto!("raccordo.v1");

    /// Encoded `FileDescriptorSet` of the API, for server reflection.
    pub const FILE_DESCRIPTOR_SET: &[u8] =
        tonic::include_file_descriptor_set!("raccordo_descriptor");
}
