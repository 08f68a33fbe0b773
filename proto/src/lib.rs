//! The yrd-mesh protocol: generated messages and services, the encoded
//! descriptor set (for reflection and for reading dataset annotations at run
//! time), [`schema`], the typed view of the standard datasets, and
//! [`datetime`], the text forms of dates and timestamps.

#![forbid(unsafe_code)]

mod build;
pub mod codec;
pub mod datetime;
pub mod schema;
mod status;

pub use status::freshness;

/// Generated code, one module per protobuf package.
#[allow(missing_docs, clippy::all, clippy::pedantic)]
pub mod generated {
    /// `yrd.*` packages.
    pub mod yrd {
        /// `yrd.mesh.*` packages.
        pub mod mesh {
            /// `yrd.mesh.v1`: options, query messages, DataNode and Federation.
            pub mod v1 {
                include!(concat!(env!("OUT_DIR"), "/yrd.mesh.v1.rs"));
            }
        }
        /// The standard datasets.
        pub mod datasets {
            /// `yrd.datasets.enterprise.v1`.
            pub mod enterprise {
                /// Version 1.
                pub mod v1 {
                    include!(concat!(env!("OUT_DIR"), "/yrd.datasets.enterprise.v1.rs"));
                }
            }
            /// `yrd.datasets.environment.v1`.
            pub mod environment {
                /// Version 1.
                pub mod v1 {
                    include!(concat!(env!("OUT_DIR"), "/yrd.datasets.environment.v1.rs"));
                }
            }
            /// `yrd.datasets.waste.v1`.
            pub mod waste {
                /// Version 1.
                pub mod v1 {
                    include!(concat!(env!("OUT_DIR"), "/yrd.datasets.waste.v1.rs"));
                }
            }
            /// `yrd.datasets.property.v1`.
            pub mod property {
                /// Version 1.
                pub mod v1 {
                    include!(concat!(env!("OUT_DIR"), "/yrd.datasets.property.v1.rs"));
                }
            }
        }
    }
}

pub use generated::yrd::datasets;
pub use generated::yrd::mesh::v1 as mesh;

/// The encoded `FileDescriptorSet` of every yrd-mesh file and its imports
/// (dataset messages and the well-known types included), for server
/// reflection and for [`descriptor_pool`].
pub const FILE_DESCRIPTOR_SET: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/yrd_descriptor.bin"));

/// The descriptor pool decoded from [`FILE_DESCRIPTOR_SET`].
pub fn descriptor_pool() -> Result<prost_reflect::DescriptorPool, prost_reflect::DescriptorError> {
    prost_reflect::DescriptorPool::decode(FILE_DESCRIPTOR_SET)
}

/// Well-known `prost_types` re-exported so that users of the protocol need
/// no direct dependency.
pub use prost_types;
